// The bin entry must be executable after `npm ci` builds it (tsc does not set modes).
import { chmodSync } from 'node:fs';
chmodSync(new URL('../dist/server/main.js', import.meta.url), 0o755);
