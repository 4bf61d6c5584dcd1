// Stdout export for log shippers (ENABLE_STDOUT_ALERTS/LOGS/MSGS): each event as one JSON
// line with the protobuf field names. It is just another consumer of the hub, with the
// same bounded queue and counted drops, so a slow reader of stdout cannot stall the relay.
import { createWriteStream, type WriteStream } from 'node:fs';
import type { Hub, Subscriber } from './hub.js';
import { KINDS, type KindSpec } from './kinds.js';
import type { RelayMetrics } from './metrics.js';
import { toJsonLine } from './proto.js';

/**
 * The export's JSON rendering of one event (protobuf field names in declaration order, as
 * the reference relay prints them), shared by every exporter so they print the same
 * document. Bytes a node sent that do not decode are counted as malformed and yield
 * undefined: never a crash.
 */
export function jsonRenderer(spec: KindSpec, metrics: RelayMetrics): (bytes: Buffer) => string | undefined {
  const malformed = metrics.dropped.tally({ kind: spec.kind, reason: 'malformed' });
  return (bytes) => {
    try {
      return toJsonLine(spec.type, bytes);
    } catch {
      malformed.n++;
      return undefined;
    }
  };
}

export class StdoutExporter {
  private readonly out: WriteStream;
  private readonly subs: Subscriber[] = [];

  /** `fd` 1 in production; tests may pass another descriptor. */
  constructor(hub: Hub, kinds: readonly KindSpec[], metrics: RelayMetrics, fd = 1) {
    // An fs stream, not process.stdout: writes to a pipe through process.stdout are
    // synchronous on Linux and would block the event loop behind a slow reader.
    this.out = createWriteStream('', { fd, autoClose: false, highWaterMark: 256 * 1024 });
    this.out.on('error', () => {}); // a closed stdout must not crash the relay
    for (const spec of kinds) {
      const render = jsonRenderer(spec, metrics);
      this.subs.push(
        hub.channels[spec.kind].subscribe(`stdout ${spec.method}`, {
          write: (bytes) => {
            const line = render(bytes);
            return line === undefined || this.out.write(`${line}\n`);
          },
          onDrain: (cb) => this.out.on('drain', cb),
        }),
      );
    }
  }

  static kindsFromEnv(env: NodeJS.ProcessEnv): KindSpec[] {
    return KINDS.filter((spec) => env[spec.stdoutEnv] === 'true');
  }

  close(): Promise<void> {
    for (const sub of this.subs) sub.channel.unsubscribe(sub);
    return new Promise((resolve) => this.out.end(resolve));
  }
}
