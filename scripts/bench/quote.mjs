import { constants, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { verifyQuote } from '../../dist/appraisal/verify-quote.js';
import { parsePcrFile } from '../../dist/tpm/pcr-file.js';
import { parseTpm2bPublic } from '../../dist/tpm/public.js';
import { publicKeyOf } from '../../dist/tpm/public-key.js';
import { parseSignature } from '../../dist/tpm/signature.js';
import { TPM_ALG } from '../../dist/tpm/constants.js';
import { compare, fmt } from './measure.mjs';

/**
 * Full quote verification (parse, magic/type, scheme, signature, nonce, PCR mapping and
 * digest) against the bare crypto.verify of the same signature with the same key: the
 * target is a ratio >= 0.9, i.e. everything but the signature costs under 10%.
 */
export function benchQuote(root) {
  const manifest = JSON.parse(readFileSync(`${root}/fixtures/swtpm/manifest.json`, 'utf8'));
  const rows = [];
  for (const [label, dirName] of [['ECC P-256 (ECDSA)', 'ecc'], ['RSA-2048 (RSASSA)', 'rsa']]) {
    const dir = manifest.dirs[dirName];
    const file = (p) => new Uint8Array(readFileSync(`${root}/fixtures/swtpm/${p}`));
    const ak = parseTpm2bPublic(file(dir.ak.pub));
    const evidence = { quote: file(dir.quote.msg), signature: file(dir.quote.sig), pcrs: parsePcrFile(file(dir.quote.pcrs)) };
    const policy = { qualifyingData: Buffer.from(dir.quote.nonce, 'hex'), requiredPcrs: { sha256: [0, 1, 2, 3] } };
    verifyQuote(ak, evidence, policy);

    const key = publicKeyOf(ak);
    const sig = parseSignature(evidence.signature);
    const raw =
      sig.sigAlg === TPM_ALG.ECDSA
        ? { key: { key, dsaEncoding: 'ieee-p1363' }, bytes: Buffer.concat([sig.r, sig.s]) }
        : { key: { key, padding: constants.RSA_PKCS1_PADDING }, bytes: sig.sig };
    if (!verify('sha256', evidence.quote, raw.key, raw.bytes)) throw new Error('baseline signature does not verify');

    const r = compare(
      () => verify('sha256', evidence.quote, raw.key, raw.bytes),
      () => verifyQuote(ak, evidence, policy),
    );
    rows.push({ what: `quote verify, ${label}`, raw: r.baseline, ours: r.candidate, ratio: r.ratio, target: 0.9 });
  }
  return rows.map((r) => ({
    name: r.what,
    value: r.ours,
    unit: 'verifications/s (CPU)',
    baseline: { name: 'crypto.verify of the same signature and key', value: r.raw, unit: 'verifications/s (CPU)' },
    ratio: r.ratio,
    target: r.target,
    line: `${r.what.padEnd(34)} raw crypto.verify ${fmt(r.raw).padStart(8)}/s   verifyQuote ${fmt(r.ours).padStart(8)}/s   ratio ${fmt(r.ratio, 3)} (target >= ${r.target})`,
  }));
}
