// The relay's version, from the package.json shipped beside dist/ (and in the image).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

function readVersion(): string {
  // server/version.ts in the sources, dist/server/version.js when built
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(fileURLToPath(new URL(rel, import.meta.url)), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'kubearmor-relay-ts' && pkg.version) return pkg.version;
    } catch {
      // try the next layout
    }
  }
  return 'unknown';
}

export const VERSION = readVersion();
