import { ParseError } from '../errors.js';
import { TPM_ALG, hashInfo, hex16, type HashInfo } from './constants.js';
import { TpmReader } from './reader.js';

export interface RsaSignature {
  readonly sigAlg: typeof TPM_ALG.RSASSA | typeof TPM_ALG.RSAPSS;
  readonly hash: HashInfo;
  readonly sig: Uint8Array;
}

export interface EcdsaSignature {
  readonly sigAlg: typeof TPM_ALG.ECDSA;
  readonly hash: HashInfo;
  readonly r: Uint8Array;
  readonly s: Uint8Array;
}

export type TpmSignature = RsaSignature | EcdsaSignature;

/** The largest ECC parameter (P-521: 66 bytes); TPM2B_ECC_PARAMETER's own bound. */
const ECC_PARAMETER_MAX = 66;
/** TPM2B_PUBLIC_KEY_RSA: 4096-bit keys at most. */
const RSA_SIG_MAX = 512;

/**
 * TPMT_SIGNATURE (Part 2 §11.3.4): sigAlg, then TPMS_SIGNATURE_RSA (§11.3.1) or
 * TPMS_SIGNATURE_ECC (§11.3.2). Schemes a TPM AK does not use for quotes (HMAC, ECDAA,
 * SM2, ECSCHNORR, NULL) are refused: nothing could verify them as an AK signature.
 */
export function parseSignature(bytes: Uint8Array): TpmSignature {
  const r = new TpmReader(bytes, 'TPMT_SIGNATURE');
  const sigAlg = r.u16('sigAlg');
  let out: TpmSignature;
  if (sigAlg === TPM_ALG.RSASSA || sigAlg === TPM_ALG.RSAPSS) {
    const hash = hashInfo(r.u16('hash'), 'signature.hash');
    out = { sigAlg, hash, sig: r.tpm2b('sig', RSA_SIG_MAX) };
  } else if (sigAlg === TPM_ALG.ECDSA) {
    const hash = hashInfo(r.u16('hash'), 'signature.hash');
    out = {
      sigAlg,
      hash,
      r: r.tpm2b('signatureR', ECC_PARAMETER_MAX),
      s: r.tpm2b('signatureS', ECC_PARAMETER_MAX),
    };
  } else {
    throw new ParseError('ERR_SIGNATURE_UNSUPPORTED', `TPMT_SIGNATURE: sigAlg 0x${hex16(sigAlg)} is not RSASSA, RSAPSS or ECDSA`);
  }
  r.end();
  return out;
}
