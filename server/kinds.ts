// The three stream kinds differ only in data: one table drives every generic path
// (upstream subscription, downstream filters, metrics labels, stdout export).
import type protobuf from 'protobufjs';
import { types } from './proto.js';

export type Kind = 'alert' | 'log' | 'message';

export interface KindSpec {
  kind: Kind;
  /** rpc name in feeder.LogService */
  method: 'WatchAlerts' | 'WatchLogs' | 'WatchMessages';
  /** filter the relay sends when it subscribes to a node daemon (as the reference relay) */
  upstreamFilter: string;
  /** filters a consumer may send; null = any string is accepted */
  acceptedFilters: readonly string[] | null;
  type: protobuf.Type;
  /** environment variable that turns on stdout export of this kind */
  stdoutEnv: string;
}

export const KINDS: readonly KindSpec[] = [
  { kind: 'alert', method: 'WatchAlerts', upstreamFilter: 'policy', acceptedFilters: ['all', 'policy'], type: types.Alert, stdoutEnv: 'ENABLE_STDOUT_ALERTS' },
  { kind: 'log', method: 'WatchLogs', upstreamFilter: 'system', acceptedFilters: ['all', 'system'], type: types.Log, stdoutEnv: 'ENABLE_STDOUT_LOGS' },
  { kind: 'message', method: 'WatchMessages', upstreamFilter: 'all', acceptedFilters: null, type: types.Message, stdoutEnv: 'ENABLE_STDOUT_MSGS' },
];

export const KIND_BY_NAME: Readonly<Record<Kind, KindSpec>> = Object.fromEntries(KINDS.map((k) => [k.kind, k])) as Record<Kind, KindSpec>;

export function methodPath(spec: KindSpec): string {
  return `/feeder.LogService/${spec.method}`;
}
