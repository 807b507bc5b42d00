import { generateKeyPairSync } from 'node:crypto';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { createServerCertificate } from '../issuer/ca-certificate.js';
import type { KeyRing } from './issuing-keys.js';
import { pem } from './pem.js';

/*
 * The verifier's own TLS certificate when none is configured: issued by its active CA for the
 * names it is reached at, with a fresh key (agents and the CLI trust the CA, not the key). It
 * is issued again when the active CA changes (a rotation by any replica: every replica then
 * serves under the same CA within a key round) and when half its 30 days have passed, and
 * installed into the listening server without a restart.
 */

const LIFETIME_MS = 30 * 86_400_000;

export interface ServerTls {
  readonly key: string;
  readonly cert: string;
}

export interface SelfIssuedTlsDeps {
  readonly ring: Pick<KeyRing, 'active'>;
  /** DNS names and IP addresses the certificate names. */
  readonly names: readonly string[];
  readonly now: () => number;
  /** Puts a certificate in use (the listening server's secure context). */
  install(tls: ServerTls): void;
  readonly logger: Logger;
}

export function createSelfIssuedTls(deps: SelfIssuedTlsDeps) {
  let issuedBy: string | undefined;
  let renewAt = 0;
  return {
    /** Issues and installs a certificate unless the one in use is from the active CA and not half-way through its life. */
    async refresh(): Promise<void> {
      const ca = deps.ring.active('x509-ca');
      const now = deps.now();
      if (ca.key.kid === issuedBy && now < renewAt) return;
      const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const names = [...new Set(deps.names)];
      const der = await createServerCertificate({
        ca: { certificate: ca.key.certificate!, signer: ca.signer },
        subjectSpki: pair.publicKey.export({ type: 'spki', format: 'der' }),
        dnsNames: names.filter((n) => isIP(n) === 0),
        ipAddresses: names.filter((n) => isIP(n) !== 0),
        now: new Date(now),
        lifetimeSeconds: LIFETIME_MS / 1000,
      });
      deps.install({ key: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, cert: pem('CERTIFICATE', der) + pem('CERTIFICATE', ca.key.certificate!) });
      if (issuedBy !== undefined) deps.logger.info({ caKid: ca.key.kid }, 'TLS certificate issued again by the active CA');
      issuedBy = ca.key.kid;
      renewAt = now + LIFETIME_MS / 2;
    },
  };
}
