/**
 * DESIGN flow 3 end to end: the agent reports its SoftHSM key and quotes, through the addon on
 * a swtpm, with qualifying data keyEvidenceDigest(nonce, report); the verifier checks the quote
 * (verifyQuote), then the report against the qualifying data the quote carried (verifyHsmKey).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findOrGenerateKey, generateKey, makeKeyReport, type Pkcs11Key } from '../src/agent/pkcs11-key.js';
import { Pkcs11Session } from '../src/pkcs11/module.js';
import { TpmSession } from '../src/agent/tpm-session.js';
import { keyEvidenceDigest, type HsmKeyReport } from '../src/appraisal/hsm-key-report.js';
import { verifyHsmKey } from '../src/appraisal/verify-hsm-key.js';
import { verifyQuote, type QuoteEvidence, type VerifiedQuote } from '../src/appraisal/verify-quote.js';
import { parseTpm2bPublic } from '../src/tpm/public.js';
import { codeOf } from './helpers/code-of.js';
import { startSoftHsm, type SoftHsm } from './helpers/softhsm.js';
import { startSwtpm, type Swtpm } from './helpers/swtpm.js';

let sw: Swtpm;
let hsm: SoftHsm;
let token: Pkcs11Session;
let tpm: TpmSession;
let key: Pkcs11Key;

beforeAll(async () => {
  [sw, hsm] = await Promise.all([startSwtpm(), startSoftHsm()]);
  token = await Pkcs11Session.open({ modulePath: hsm.modulePath, tokenLabel: hsm.tokenLabel, pin: hsm.userPin });
  key = await findOrGenerateKey(token, 'agent-identity');
  tpm = await TpmSession.open({ tcti: sw.tcti, stateDir: join(sw.dir, 'agent-state') });
});
afterAll(async () => {
  await tpm?.close();
  await token?.close();
  await Promise.all([sw?.stop(), hsm?.stop()]);
});

const selection = { sha256: [0, 1, 2, 3, 4, 5, 6, 7] };

/** What the agent sends for a challenge: the key report and a quote whose qualifying data binds it. */
async function answer(nonce: Uint8Array): Promise<{ report: HsmKeyReport; quote: QuoteEvidence }> {
  const report = await makeKeyReport(token, key, nonce);
  const { attest, signature } = await tpm.quote(selection, keyEvidenceDigest(nonce, report));
  return { report, quote: { quote: attest, signature, pcrs: await tpm.pcrRead(selection) } };
}

/** The verifier's quote check: the qualifying data it expects is that of the nonce and the report presented. */
function verifyAnswerQuote(quote: QuoteEvidence, nonce: Uint8Array, report: HsmKeyReport): VerifiedQuote {
  return verifyQuote(parseTpm2bPublic(tpm.ak.public), quote, { qualifyingData: keyEvidenceDigest(nonce, report), requiredPcrs: selection });
}

describe('an HSM key report bound to a TPM quote', () => {
  it('verifies: the quote with verifyQuote, the report against the qualifying data the quote carried', async () => {
    const nonce = randomBytes(32);
    const { report, quote } = await answer(nonce);
    const verified = verifyAnswerQuote(quote, nonce, report);
    const hsmKey = verifyHsmKey(report, { nonce, quotedQualifyingData: verified.attest.extraData });
    expect(hsmKey.publicKey.equals(key.publicKey)).toBe(true);
    expect(hsmKey.reported.token.label).toBe(hsm.tokenLabel);
    expect(hsmKey.reported.attributes.extractable).toBe(false);
  });

  it('does not verify with a report changed after the quote, re-signed or not', async () => {
    const nonce = randomBytes(32);
    const { report, quote } = await answer(nonce);
    const verified = verifyAnswerQuote(quote, nonce, report);
    const quotedQualifyingData = verified.attest.extraData;

    // Another key of the token, reported (and validly signed) for the same nonce after the quote.
    const other = await generateKey(token, 'swapped-in');
    const swapped = await makeKeyReport(token, other, nonce);
    expect(codeOf(() => verifyHsmKey(swapped, { nonce, quotedQualifyingData }))).toBe('ERR_HSM_KEY_NOT_BOUND');
    // Nor does the quote verify for it: its qualifying data is the first report's.
    expect(codeOf(() => verifyAnswerQuote(quote, nonce, swapped))).toBe('ERR_QUOTE_NONCE_MISMATCH');

    // The report edited in transit.
    const edited = { ...report, token: { ...report.token, label: 'another-token' } };
    expect(codeOf(() => verifyHsmKey(edited, { nonce, quotedQualifyingData }))).toBe('ERR_HSM_KEY_NOT_BOUND');
  });
});
