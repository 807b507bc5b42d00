import { X509Certificate } from 'node:crypto';
import { bootstrapCa, certificateFingerprint } from '../client/api-client.js';
import { readStateFile, STATE_FILES, writeStateFile } from './state-files.js';

/**
 * The verifier's root CA for the agent, pinned by `fingerprint` (step-style, see
 * src/client/api-client.ts): ca.pem of the state directory when it is the root with that
 * fingerprint, else fetched from `server` by bootstrapCa, which checks it, and kept in ca.pem
 * for the next runs. A fingerprint other than the kept root's means the operator pinned a new
 * root: it is fetched and replaces ca.pem.
 */
export async function pinnedCa(stateDir: string, server: string, fingerprint: string): Promise<string> {
  const wanted = normalizeFingerprint(fingerprint);
  const kept = await readStateFile(stateDir, STATE_FILES.ca);
  if (kept !== null && keptFingerprint(kept) === wanted) return kept.toString('utf8');
  const pem = await bootstrapCa(server, wanted);
  await writeStateFile(stateDir, STATE_FILES.ca, pem);
  return pem;
}

/** Lowercase hex without colons, as certificateFingerprint gives it and agent.json keeps it. */
function normalizeFingerprint(fingerprint: string): string {
  return fingerprint.toLowerCase().replace(/:/g, '');
}

/** The fingerprint of a kept ca.pem; undefined when it is not a certificate (it is fetched again). */
function keptFingerprint(pem: Buffer): string | undefined {
  try {
    return certificateFingerprint(new X509Certificate(pem).raw);
  } catch {
    return undefined;
  }
}

/**
 * The CA certificates the agent trusts the verifier with: the pinned root, and the certificates
 * of the last bundle.pem the verifier sent over a channel so trusted. After a CA rotation the
 * verifier's TLS certificate chains to the new CA, which the bundle published before it signed
 * anything: the agent follows the rotation without a new fingerprint. Unparsable bundle
 * entries are left out.
 */
export async function verifierTrust(stateDir: string, server: string, fingerprint: string): Promise<string> {
  const root = await pinnedCa(stateDir, server, fingerprint);
  const bundle = await readStateFile(stateDir, STATE_FILES.bundle);
  if (bundle === null) return root;
  const certificates = bundle.toString('utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  const parsed = certificates.filter((pem) => {
    try {
      return new X509Certificate(pem).ca;
    } catch {
      return false;
    }
  });
  return [root.trimEnd(), ...parsed].join('\n') + '\n';
}
