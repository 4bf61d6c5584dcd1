// Defaults of the search-cluster sinks, apart from sink.ts so that the flag table can show
// them without loading the sink.
export const SINK_DEFAULTS = {
  /** bounds of what one sink holds: 10 000 events, as the reference relay's channel, and 8 MiB */
  queue: { maxEvents: 10_000, maxBytes: 8 * 1024 * 1024 },
  /** well under a second at low rates (the reference waits 10 s) */
  flushMs: 200,
  batchEvents: 500,
  /** event bytes (protobuf) per bulk request; the JSON is two to three times larger */
  batchBytes: 2 * 1024 * 1024,
  backoff: { initialMs: 250, maxMs: 10_000 },
  maxItemAttempts: 10,
  /** a bulk request unanswered this long is sent again (its documents carry ids: overwritten, not copied) */
  requestTimeoutMs: 30_000,
} as const;
