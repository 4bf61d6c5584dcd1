// Stdout export for log shippers (ENABLE_STDOUT_ALERTS/LOGS/MSGS): each event as one JSON
// line with the protobuf field names. It is just another consumer of the hub, with the
// same bounded queue and counted drops, so a slow reader of stdout cannot stall the relay.
import { createWriteStream, type WriteStream } from 'node:fs';
import type { Hub, Subscriber } from './hub.js';
import { KINDS, type KindSpec } from './kinds.js';
import type { RelayMetrics } from './metrics.js';
import { toJsonLine } from './proto.js';

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
      const malformed = metrics.dropped.tally({ kind: spec.kind, reason: 'malformed' });
      this.subs.push(
        hub.channels[spec.kind].subscribe(`stdout ${spec.method}`, {
          write: (bytes) => {
            let line: string;
            try {
              line = toJsonLine(spec.type, bytes);
            } catch {
              // bytes a node sent that do not decode: counted, never a crash
              malformed.n++;
              return true;
            }
            return this.out.write(`${line}\n`);
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
