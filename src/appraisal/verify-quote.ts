import { hash } from 'node:crypto';
import { PolicyError, VerificationError } from '../errors.js';
import type { Attest, ClockInfo, QuoteInfo } from '../tpm/attest.js';
import { TPM_ST } from '../tpm/constants.js';
import { isPcrComposite, pcrCompositeBytes, selectedPcrValues } from '../tpm/pcr-composite.js';
import { formatPcrSelection, type PcrBankSelection, type PcrValues } from '../tpm/pcr-selection.js';
import type { SigningKey } from '../tpm/verify-signature.js';
import { equalBytes } from '../bytes.js';
import { verifySignedAttest, type AttestKind } from './signed-attest.js';

export interface QuoteEvidence {
  /** The marshalled TPMS_ATTEST the TPM signed. */
  readonly quote: Uint8Array;
  /** The marshalled TPMT_SIGNATURE. */
  readonly signature: Uint8Array;
  /** The PCR values the agent claims (unsigned); only those inside the signed selection are used. */
  readonly pcrs: PcrValues;
}

export interface QuotePolicy {
  /** The qualifying data the verifier expects (derived from the nonce it issued). */
  readonly qualifyingData: Uint8Array;
  /** PCRs the baseline relies on: each must be inside the signed selection. */
  readonly requiredPcrs?: { readonly [bank: string]: readonly number[] };
  /** Legacy SHA-1 signatures and AKs: refused unless an operator opts in for old fleets. */
  readonly allowSha1?: boolean;
}

export interface VerifiedQuote {
  readonly attest: Attest;
  readonly clockInfo: ClockInfo;
  /** The signed selection, in the TPM's order. */
  readonly selection: readonly PcrBankSelection[];
  /** The PCR values proven by the signature: exactly the signed selection, nothing else. */
  readonly pcrs: PcrValues;
}

const QUOTE: AttestKind = {
  what: 'quote',
  type: TPM_ST.ATTEST_QUOTE,
  tpmSt: 'TPM_ST_ATTEST_QUOTE',
  codes: { magic: 'ERR_QUOTE_MAGIC', type: 'ERR_QUOTE_TYPE', nonce: 'ERR_QUOTE_NONCE_MISMATCH', sha1: 'ERR_QUOTE_SHA1_NOT_ALLOWED' },
};

/**
 * Verifies a TPM2_Quote against the enrolled AK and the issued challenge: DESIGN's quote
 * invariants, here and in verifySignedAttest; the first one that fails throws its own code.
 * Freshness of the nonce (issued, unexpired, unused) is the caller's: it passes the
 * qualifying data only for a nonce it has just consumed.
 */
export function verifyQuote(ak: SigningKey, evidence: QuoteEvidence, policy: QuotePolicy): VerifiedQuote {
  const { attest, signature } = verifySignedAttest(
    ak,
    evidence.quote,
    evidence.signature,
    policy.qualifyingData,
    QUOTE,
    policy.allowSha1,
  );
  // verifySignedAttest checked the type is TPM_ST_ATTEST_QUOTE.
  const { pcrSelect, pcrDigest } = attest.attested as QuoteInfo;
  checkRequiredPcrs(pcrSelect, policy);

  // Values are taken by the signed selection only (go-attestation CVE-2022-0317, tpm2-tools
  // CVE-2024-29039 took the supplied selection).
  const pcrs = selectedPcrValues(pcrSelect, evidence.pcrs);
  // A host quotes the same PCR values at every renewal: the same bytes under the same signed
  // digest were hashed to it before (by this AK's last quote), so comparing them proves it, and
  // the hash, a fifth of what a quote costs besides its RSA signature, is spent on a change only.
  const known = lastComposite.get(ak);
  if (!(known && known.alg === signature.hash.alg && equalBytes(known.digest, pcrDigest) && isPcrComposite(pcrSelect, pcrs, known.bytes))) {
    const bytes = pcrCompositeBytes(pcrSelect, pcrs);
    if (!equalBytes(hash(signature.hash.name, bytes, 'buffer'), pcrDigest)) {
      throw new VerificationError('ERR_QUOTE_PCR_DIGEST_MISMATCH', 'supplied PCR values do not hash to the signed pcrDigest');
    }
    // Copies: the composite may be a slice of Node's shared buffer pool, which it would keep alive.
    lastComposite.set(ak, { alg: signature.hash.alg, digest: Uint8Array.from(pcrDigest), bytes: Uint8Array.from(bytes) });
  }
  return { attest, clockInfo: attest.clockInfo, selection: pcrSelect, pcrs };
}

/**
 * Per AK (the parsed key the verifier keeps per agent), the last composite whose hash was
 * checked against a signed pcrDigest: a memo of a pure function, freed with the key.
 */
const lastComposite = new WeakMap<SigningKey, { readonly alg: number; readonly digest: Uint8Array; readonly bytes: Uint8Array }>();

/** Every PCR the baseline relies on must be inside the signed selection. */
function checkRequiredPcrs(pcrSelect: readonly PcrBankSelection[], policy: QuotePolicy): void {
  const required = policy.requiredPcrs;
  if (!required) return;
  for (const bank in required) {
    // A baseline that relies on SHA-1 PCR values is legacy too: SHA-1 extends can collide.
    if (bank === 'sha1' && !policy.allowSha1) {
      throw new PolicyError('ERR_QUOTE_SHA1_NOT_ALLOWED', 'the baseline requires sha1 PCRs; legacy SHA-1 is not allowed');
    }
    const signed = pcrSelect.find((s) => s.hash.name === bank);
    const missing = required[bank]!.filter((i) => !signed?.pcrs.includes(i));
    if (missing.length > 0) {
      throw new VerificationError(
        'ERR_QUOTE_PCR_NOT_SIGNED',
        `${bank} PCR ${missing.join(',')} required but not in the signed selection ${formatPcrSelection(pcrSelect)}`,
      );
    }
  }
}
