// `npm run demo -- evidence`: verify the real evidence shipped beside the
// project (../shared/vectors) and the swtpm fixtures, and say what was checked.
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { appraiseEventlog } from '../dist/appraisal/appraise-eventlog.js';
import { parseEventlogRules } from '../dist/baseline/eventlog-rules.js';
import { verifyCertify } from '../dist/appraisal/verify-certify.js';
import { hex } from '../dist/bytes.js';
import { loadEkRootStore } from '../dist/cli/root-store.js';
import { parseImaLog } from '../dist/eventlog/ima/parse.js';
import { replayIma } from '../dist/eventlog/ima/replay.js';
import { parseTcgLog } from '../dist/eventlog/tcg-log.js';
import { verifyQuote } from '../dist/appraisal/verify-quote.js';
import { isAttestorError } from '../dist/errors.js';
import { verifyEkCertificate } from '../dist/tpm/ek-certificate.js';
import { rootStoreFromPemTexts } from '../dist/tpm/ek-roots.js';
import { parsePcrFile } from '../dist/tpm/pcr-file.js';
import { formatPcrSelection } from '../dist/tpm/pcr-selection.js';
import { parseTpm2bPublic, parseTpmtPublic } from '../dist/tpm/public.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const vectors = resolve(process.env.ATTESTOR_VECTORS ?? `${root}../shared/vectors`);
const read = (path) => new Uint8Array(readFileSync(path));
if (!existsSync(`${vectors}/NOTICE.md`)) {
  console.error(`error: the shared test vectors are not at ${vectors}: put them beside the repository or set ATTESTOR_VECTORS`);
  process.exit(2);
}
let failures = 0;

function step(title, fn) {
  try {
    const detail = fn();
    console.log(`ok    ${title}${detail ? `\n      ${detail}` : ''}`);
  } catch (e) {
    failures++;
    console.log(`FAIL  ${title}: ${isAttestorError(e) ? `${e.code}: ${e.message}` : e}`);
  }
}

/** A check that must be refused with `code`. */
function refused(title, code, fn) {
  step(title, () => {
    try {
      fn();
    } catch (e) {
      if (isAttestorError(e) && e.code === code) return `refused as expected: ${code}`;
      throw e;
    }
    throw new Error(`accepted, expected ${code}`);
  });
}

const describeQuote = (v) =>
  `signed selection ${formatPcrSelection(v.selection)}; clock ${v.clockInfo.clock} ms, resets ${v.clockInfo.resetCount}`;

console.log(`Attestor demo: verifying real TPM evidence\n  vectors: ${vectors}\n`);

// 1. tpm2-tools bundle (keylime test data): AK TPM2B_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE, PCR file.
{
  const d = `${vectors}/quote-bundles/keylime-tpm2-tools`;
  const ak = parseTpm2bPublic(read(`${d}/ak.pub`));
  const evidence = { quote: read(`${d}/quote.out`), signature: read(`${d}/quotesig.out`), pcrs: parsePcrFile(read(`${d}/quotepcr.out`)) };
  const nonce = Buffer.from('db1db298db6d60e6385b7231743e9c3056a18003', 'hex');
  step('tpm2-tools quote: magic, type, AK scheme + signature, nonce, signed PCR selection, PCR digest', () =>
    describeQuote(verifyQuote(ak, evidence, { qualifyingData: nonce })),
  );
  refused('same quote with another nonce', 'ERR_QUOTE_NONCE_MISMATCH', () =>
    verifyQuote(ak, evidence, { qualifyingData: Buffer.alloc(20) }),
  );
  refused('same quote asked to prove PCR 0, which it did not sign', 'ERR_QUOTE_PCR_NOT_SIGNED', () =>
    verifyQuote(ak, evidence, { qualifyingData: nonce, requiredPcrs: { sha256: [0] } }),
  );
}

// 2. GCE Shielded VM (Windows), go-attestation test data: RSASSA-SHA1 over the SHA-1 bank.
{
  const j = JSON.parse(readFileSync(`${vectors}/quote-bundles/windows_gcp_shielded_vm.json`, 'utf8'));
  const b64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));
  const ak = parseTpmtPublic(b64(j.AK.Public));
  const sha1 = Object.fromEntries(j.Log.PCRs.map((p) => [p.Index, b64(p.Digest)]));
  const evidence = { quote: b64(j.Quote.Quote), signature: b64(j.Quote.Signature), pcrs: { sha1 } };
  const policy = { qualifyingData: b64(j.Quote.Nonce) };
  refused('GCE Windows quote under the default policy (SHA-1 signature)', 'ERR_QUOTE_SHA1_NOT_ALLOWED', () =>
    verifyQuote(ak, evidence, policy),
  );
  step('GCE Windows quote with legacy SHA-1 explicitly allowed', () => {
    const v = verifyQuote(ak, evidence, { ...policy, allowSha1: true });
    return `${describeQuote(v)}; PCR 7 = ${hex(v.pcrs.sha1[7])}`;
  });
  step('GCE Windows measured-boot log: replays to the quoted PCRs, Secure Boot proven on', () => {
    const verified = verifyQuote(ak, evidence, { ...policy, allowSha1: true });
    const log = parseTcgLog(b64(j.Log.Raw));
    const verdict = appraiseEventlog(log, verified.pcrs, parseEventlogRules({ requireSecureBoot: true }));
    if (!verdict.ok) throw new Error(verdict.reasons.map((r) => `${r.code}: ${r.message}`).join('; '));
    return `${log.format} log, ${log.events.length} events; ${verdict.facts.secureBoot.detail}`;
  });
}

// 3. A Linux IMA runtime measurement list from a real machine (keylime test data).
step('IMA list: every template hash checked, PCR 10 replayed in both banks', () => {
  const entries = parseImaLog(read(`${vectors}/ima/ascii_runtime_measurements`));
  const pcrs = replayIma(entries);
  return `${entries.length} entries; PCR 10 sha1 ${pcrs.sha1['10']}, sha256 ${pcrs.sha256['10'].slice(0, 16)}...`;
});

// 4. Fresh evidence from swtpm (fixtures/swtpm, made by scripts/make-fixtures.sh).
{
  const base = `${root}fixtures/swtpm`;
  const manifest = JSON.parse(readFileSync(`${base}/manifest.json`, 'utf8'));
  for (const [name, dir] of Object.entries(manifest.dirs)) {
    const ak = parseTpm2bPublic(read(`${base}/${dir.ak.pub}`));
    const evidence = { quote: read(`${base}/${dir.quote.msg}`), signature: read(`${base}/${dir.quote.sig}`), pcrs: parsePcrFile(read(`${base}/${dir.quote.pcrs}`)) };
    step(`swtpm ${name} AK (${dir.ak.scheme}) quote`, () =>
      describeQuote(verifyQuote(ak, evidence, { qualifyingData: Buffer.from(dir.quote.nonce, 'hex') })),
    );
    for (const [label, c, expectRefusal] of [['certify', dir.certify, false], ['certify of a duplicable key', dir.dupCertify, true]]) {
      if (!c) continue;
      const run = () =>
        verifyCertify(
          ak,
          { keyPublic: parseTpm2bPublic(read(`${base}/${c.key.pub}`)), certifyInfo: read(`${base}/${c.msg}`), signature: read(`${base}/${c.sig}`) },
          { qualifyingData: Buffer.from(c.qualifyingData, 'hex') },
        );
      if (expectRefusal) refused(`swtpm ${name} ${label}`, 'ERR_CERTIFY_KEY_ATTRIBUTES', run);
      else step(`swtpm ${name} ${label}: key is TPM-resident and its Name is what the AK certified`, () => void run());
    }
  }
}

// 5. EK certificates: swtpm's (chained to its local CA) and the vendor root store shipped in
//    fixtures/ek-roots, loaded as `attestor-agent tpm info` loads it by default.
{
  const base = `${root}fixtures/swtpm`;
  const manifest = JSON.parse(readFileSync(`${base}/manifest.json`, 'utf8'));
  const pem = (name) => ({ name, pem: readFileSync(`${base}/${name}`, 'utf8') });
  const swtpmCa = rootStoreFromPemTexts([pem(manifest.caChain.root), pem(manifest.caChain.intermediate)]);
  const vendors = loadEkRootStore();
  for (const name of ['rsa', 'ecc']) {
    const dir = manifest.dirs[name];
    const cert = read(`${base}/${dir.ek.cert}`);
    const ekPublic = parseTpm2bPublic(read(`${base}/${dir.ek.pub}`));
    step(`swtpm ${name} EK certificate: chains to the local CA and certifies the TPM's EK`, () => {
      const v = verifyEkCertificate(cert, swtpmCa, { ekPublic });
      const m = v.info.manufacturer;
      return `anchor ${v.anchor}, chain of ${v.chain.length}, EK key purpose ${v.info.hasEkKeyPurpose ? 'present' : 'absent'}; manufacturer ${m?.id ?? '?'}, model ${v.info.model ?? '?'}`;
    });
    refused(`swtpm ${name} EK certificate against the vendor roots (${vendors.anchors.length} anchors)`, 'ERR_EK_CERT_CHAIN', () =>
      verifyEkCertificate(cert, vendors, { ekPublic }),
    );
  }
}

console.log(failures ? `\n${failures} check(s) failed` : '\nall checks passed');
process.exitCode = failures ? 1 : 0;
