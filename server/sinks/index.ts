// Starts the configured sinks. This module and the client libraries it pulls in are
// imported only when a sink is on, so a relay without sinks does not carry them.
import type { Hub } from '../hub.js';
import type { Logger } from '../logger.js';
import type { RelayMetrics } from '../metrics.js';
import type { SinkConfig } from './config.js';
import { Sink, type BulkClient, type SinkOptions } from './sink.js';

async function clientFor(config: SinkConfig, requestTimeoutMs: number): Promise<BulkClient> {
  if (config.name === 'elasticsearch') return (await import('./elasticsearch.js')).elasticsearchClient(config, requestTimeoutMs);
  return (await import('./opensearch.js')).opensearchClient(config, requestTimeoutMs);
}

export async function startSinks(configs: readonly SinkConfig[], opts: SinkOptions, hub: Hub, metrics: RelayMetrics, logger: Logger): Promise<Sink[]> {
  const sinks: Sink[] = [];
  for (const config of configs) {
    const sink = new Sink(config, await clientFor(config, opts.requestTimeoutMs), opts, metrics, logger.child({ component: `${config.name}-sink` }));
    sink.start(hub);
    logger.info(
      { sink: config.name, url: config.url.href, indices: config.indices, basicAuth: Boolean(config.auth), customCa: Boolean(config.ca), verifyTls: !config.insecure },
      `${config.name} export on`,
    );
    sinks.push(sink);
  }
  return sinks;
}
