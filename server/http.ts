// The observability listener: Prometheus metrics, liveness, readiness and /status.
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from './logger.js';

export interface HttpEndpoints {
  port: number;
  close(): Promise<void>;
}

export function startHttp(opts: { host: string; port: number; registry: Registry; ready: () => boolean; status: () => unknown; logger: Logger }): Promise<HttpEndpoints> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      opts.registry
        .metrics()
        .then((text) => res.writeHead(200, { 'content-type': opts.registry.contentType }).end(text))
        .catch((err: Error) => res.writeHead(500).end(`metrics failed: ${err.message}\n`));
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const ready = opts.ready();
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : 'not ready\n');
    } else if (path === '/status') {
      let body: string;
      try {
        body = `${JSON.stringify(opts.status(), null, 2)}\n`;
      } catch (err) {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`status failed: ${(err as Error).message}\n`);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz, /readyz or /status\n');
    }
  });
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen for HTTP on ${opts.host}:${opts.port}: ${err.message}`)));
    server.listen(opts.port, opts.host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : opts.port;
      opts.logger.info({ port }, 'serving /metrics, /healthz and /readyz');
      resolve({
        port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
