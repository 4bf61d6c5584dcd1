import pino from 'pino';

export type Logger = pino.Logger;

/**
 * JSON logs on stdout, or on stderr when stdout carries exported events (a log shipper
 * reading stdout must see only events there).
 */
export function createLogger(level: string, toStderr: boolean): Logger {
  return pino({ level, base: { name: 'kubearmor-relay' } }, pino.destination({ fd: toStderr ? 2 : 1, sync: false }));
}
