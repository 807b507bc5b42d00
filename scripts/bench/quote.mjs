import { spawnSync } from 'node:child_process';
import { constants, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { verifyQuote } from '../../dist/appraisal/verify-quote.js';
import { parsePcrFile } from '../../dist/tpm/pcr-file.js';
import { parseTpm2bPublic } from '../../dist/tpm/public.js';
import { publicKeyOf } from '../../dist/tpm/public-key.js';
import { parseSignature } from '../../dist/tpm/signature.js';
import { TPM_ALG } from '../../dist/tpm/constants.js';
import { compare, fmt, median } from './measure.mjs';

/**
 * Full quote verification (parse, magic/type, scheme, signature, nonce, PCR mapping and
 * digest) against the bare crypto.verify of the same signature with the same key: the
 * target is a ratio >= 0.9, i.e. everything but the signature costs under 10%.
 */
export function benchQuote(root) {
  const manifest = JSON.parse(readFileSync(`${root}/fixtures/swtpm/manifest.json`, 'utf8'));
  const rows = [];
  const checkquote = [];
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
    checkquote.push({ label, ms: checkquoteMs(root, dir), oursUs: 1e6 / r.candidate });
  }
  return [...rows.map((r) => ({
    name: r.what,
    value: r.ours,
    unit: 'verifications/s (CPU)',
    baseline: { name: 'crypto.verify of the same signature and key', value: r.raw, unit: 'verifications/s (CPU)' },
    ratio: r.ratio,
    target: r.target,
    line: `${r.what.padEnd(34)} raw crypto.verify ${fmt(r.raw).padStart(8)}/s   verifyQuote ${fmt(r.ours).padStart(8)}/s   ratio ${fmt(r.ratio, 3)} (target >= ${r.target})`,
  })), ...checkquote.map((c) => ({
    name: `tpm2_checkquote, ${c.label}`,
    value: c.ms,
    unit: 'ms per quote (process)',
    line: `${`tpm2_checkquote, ${c.label}`.padEnd(34)} ${fmt(c.ms, 2)} ms per quote as a process (as Keylime ran it before its Python checkquote); verifyQuote ${fmt(c.oursUs, 1)} us, ${fmt((c.ms * 1000) / c.oursUs)}x less`,
  }))];
}

/** Median wall time of tpm2_checkquote on the fixture's quote, process start included. */
function checkquoteMs(root, dir) {
  const f = (p) => `${root}/fixtures/swtpm/${p}`;
  const args = ['-u', f(dir.ak.pub), '-m', f(dir.quote.msg), '-s', f(dir.quote.sig), '-f', f(dir.quote.pcrs), '-g', 'sha256', '-q', dir.quote.nonce];
  const times = [];
  for (let i = 0; i < 21; i++) {
    const t = performance.now();
    const r = spawnSync('tpm2_checkquote', args);
    if (r.status !== 0) throw new Error(`tpm2_checkquote refused the fixture quote: ${r.stderr}`);
    times.push(performance.now() - t);
  }
  return median(times);
}
