// The transport seam: the one place credentials come from, for serving consumers and for
// dialing node daemons. Plaintext lives here; mutual TLS (server/tls.ts) implements the
// same interface from the certificate manager, so nothing else in the relay knows which.
import * as grpc from '@grpc/grpc-js';

export interface Listening {
  /** the bound port (useful when 0 was asked for) */
  port: number;
  /** stop accepting new connections; established ones are left to the grpc Server */
  close(): Promise<void>;
}

export interface Transport {
  /** short description for logs, e.g. "plaintext" or "mutual TLS (external)" */
  readonly name: string;
  /** start serving `server` on host:port */
  serve(server: grpc.Server, host: string, port: number): Promise<Listening>;
  /**
   * Credentials for one new dial to `host` (a node daemon, or the relay from a tool).
   * Called for every new connection so rotated material is picked up.
   */
  channelCredentials(host: string): grpc.ChannelCredentials;
  /** extra channel options the credentials need (e.g. a TLS server-name override) */
  channelOptions?(host: string): grpc.ChannelOptions;
  /** the verified client certificate subject of a connected peer, as grpc-js names it ("ip:port") */
  peerSubject?(peer: string): string | undefined;
}

export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export class PlaintextTransport implements Transport {
  readonly name = 'plaintext';

  serve(server: grpc.Server, host: string, port: number): Promise<Listening> {
    return new Promise((resolve, reject) => {
      server.bindAsync(formatHostPort(host, port), grpc.ServerCredentials.createInsecure(), (err, bound) => {
        if (err) return reject(new Error(`cannot listen on ${formatHostPort(host, port)}: ${err.message}`));
        resolve({
          port: bound,
          close: async () => {
            server.unbind(formatHostPort(host, bound));
          },
        });
      });
    });
  }

  channelCredentials(): grpc.ChannelCredentials {
    return grpc.credentials.createInsecure();
  }
}
