// The TLS flags the tools share (fake-node serves, logs dials) and the transport they make.
import pino from 'pino';
import type { FlagTable } from '../flags.js';
import { openMutualTls } from '../tls.js';
import { PlaintextTransport, type Transport } from '../transport.js';

export const TOOL_TLS_FLAGS = {
  tlsCertPath: { type: 'string', default: '', form: 'DIR', help: 'mutual TLS from DIR/ca.crt and DIR/server.crt+key (fake-node) or DIR/client.crt+key (logs); empty = plaintext' },
  tlsServerName: { type: 'string', default: '', help: 'name to verify the server certificate against instead of the dialed host' },
} satisfies FlagTable;

export interface ToolTransport {
  transport: Transport;
  close(): void;
}

/** Plaintext without --tlsCertPath; otherwise the files of one role, watched for rotation. */
export async function toolTransport(flags: { tlsCertPath: string; tlsServerName: string }, role: 'server' | 'client'): Promise<ToolTransport> {
  if (flags.tlsCertPath === '') return { transport: new PlaintextTransport(), close: () => {} };
  const { transport, manager } = await openMutualTls({
    provider: 'external',
    dir: flags.tlsCertPath,
    roles: [role],
    serverName: flags.tlsServerName || undefined,
    logger: pino({ level: 'warn' }, pino.destination(2)),
  });
  return { transport, close: () => manager.close() };
}
