// Every verdict of the relay's verifier equals Go's crypto/x509 verdict (what node daemons,
// karmor and the reference relay use) on chains made by an independent tool, on both hops:
// 'client' is the relay serving a consumer, 'server' the relay dialing a node daemon.
import { afterAll, describe, expect, it } from 'vitest';
import { parseCertificates } from '../certs/pem.js';
import { loadTrustBundle, verifyPeer } from '../certs/verify.js';
import { type GoVerdict, goVerdicts, hostileCorpus, readText } from './helpers/go-parity.js';

const corpus = hostileCorpus();
let live: GoVerdict[] | undefined;
const goVerdict = (index: number): GoVerdict => {
  live ??= goVerdicts(corpus.cases, corpus.dir);
  return live[index]!;
};

function ourVerdict(roots: string, chain: string, purpose: 'client' | 'server', host: string): { ok: boolean; why: string } {
  let bundle;
  try {
    bundle = loadTrustBundle(readText(roots));
  } catch (err) {
    return { ok: false, why: `ca.crt refused: ${(err as Error).message}` };
  }
  const verdict = verifyPeer(parseCertificates(readText(chain), 'chain'), bundle, { purpose, host: host || undefined });
  return verdict.ok ? { ok: true, why: 'accepted' } : { ok: false, why: `${verdict.reason}: ${verdict.detail}` };
}

describe('certificate verdicts equal Go crypto/x509 on hostile chains', () => {
  afterAll(() => corpus.remove());

  it('covers every case on both the consumer side and the node side', () => {
    expect(corpus.cases.filter((c) => c.purpose === 'client').length).toBeGreaterThan(40);
    expect(corpus.cases.filter((c) => c.purpose === 'server').length).toBeGreaterThan(45);
  });

  corpus.cases.forEach((c, index) => {
    const side = c.purpose === 'client' ? 'a consumer' : `a node daemon dialed as ${c.host}`;
    it(`${c.go === 'accept' ? 'accepts' : 'refuses'} from ${side}: ${c.name} (as Go does)`, () => {
      const ours = ourVerdict(c.roots, c.chain, c.purpose, c.host);
      const go = goVerdict(index);
      expect({ name: go.name, purpose: go.purpose }).toEqual({ name: c.name, purpose: c.purpose });
      expect(go.ok, `Go's live verdict disagrees with the table: ${go.error}`).toBe(c.go === 'accept');
      expect(ours.ok, `ours: ${ours.why}; Go: ${go.error ?? 'accepted'}`).toBe(c.go === 'accept');
    });
  });
});
