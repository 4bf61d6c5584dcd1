// A PKI made by the openssl CLI, not by the relay's code: a root, an intermediate under it,
// and leaves under the intermediate, the shape cert-manager and enterprise PKIs produce.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IssuedPair } from '../../certs/issue.js';

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

const read = (dir: string, name: string): string => readFileSync(join(dir, name), 'utf8');

/** A CA: self-signed when `issuer` is absent. Extensions are openssl x509v3 config lines. */
export function opensslCa(dir: string, name: string, extensions: string[], issuer?: string): { certPem: string; keyPem: string } {
  openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`]);
  openssl(dir, ['req', '-new', '-key', `${name}.key`, '-subj', `/O=pki-test/CN=${name}`, '-out', `${name}.csr`]);
  writeFileSync(join(dir, `${name}.ext`), [...extensions, 'subjectKeyIdentifier=hash', ...(issuer ? ['authorityKeyIdentifier=keyid'] : [])].join('\n') + '\n');
  const signer = issuer ? ['-CA', `${issuer}.crt`, '-CAkey', `${issuer}.key`, '-CAcreateserial'] : ['-signkey', `${name}.key`];
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, ...signer, '-days', '2', '-extfile', join(dir, `${name}.ext`), '-out', `${name}.crt`]);
  return { certPem: read(dir, `${name}.crt`), keyPem: read(dir, `${name}.key`) };
}

/** A leaf good for both serverAuth and clientAuth, for 127.0.0.1 and localhost. */
export function opensslLeaf(dir: string, name: string, issuer: string): IssuedPair {
  openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.ec`]);
  openssl(dir, ['pkcs8', '-topk8', '-nocrypt', '-in', `${name}.ec`, '-out', `${name}.key`]);
  openssl(dir, ['req', '-new', '-key', `${name}.key`, '-subj', `/O=pki-test/CN=${name}`, '-out', `${name}.csr`]);
  writeFileSync(
    join(dir, `${name}.ext`),
    ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=serverAuth,clientAuth', 'subjectAltName=IP:127.0.0.1,DNS:localhost', 'authorityKeyIdentifier=keyid'].join('\n') + '\n',
  );
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${issuer}.crt`, '-CAkey', `${issuer}.key`, '-CAcreateserial', '-days', '1', '-extfile', join(dir, `${name}.ext`), '-out', `${name}.crt`]);
  return { certPem: read(dir, `${name}.crt`), keyPem: read(dir, `${name}.key`) };
}

export interface ChainedPki {
  root: { certPem: string; keyPem: string };
  intermediate: { certPem: string; keyPem: string };
  /** leaf + intermediate in one PEM, as server.crt / client.crt hold them */
  server: IssuedPair;
  client: IssuedPair;
}

export function chainedPki(dir: string): ChainedPki {
  const root = opensslCa(dir, 'root', ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign']);
  const intermediate = opensslCa(dir, 'intermediate', ['basicConstraints=critical,CA:TRUE,pathlen:0', 'keyUsage=critical,keyCertSign,cRLSign'], 'root');
  const withChain = (pair: IssuedPair): IssuedPair => ({ certPem: pair.certPem + intermediate.certPem, keyPem: pair.keyPem });
  return { root, intermediate, server: withChain(opensslLeaf(dir, 'server', 'intermediate')), client: withChain(opensslLeaf(dir, 'client', 'intermediate')) };
}
