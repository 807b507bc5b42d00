import type { KeyObject } from 'node:crypto';
import { PolicyError } from '../errors.js';
import { TPMA_OBJECT, TPM_ALG, TPM_ECC } from '../tpm/constants.js';
import type { TpmPublic } from '../tpm/public.js';

const REQUIRED: ReadonlyArray<[keyof typeof TPMA_OBJECT, boolean]> = [
  ['restricted', true],
  ['sign', true],
  ['fixedTPM', true],
  ['fixedParent', true],
  ['sensitiveDataOrigin', true],
  ['decrypt', false],
];

/**
 * The attributes that make a key an attestation key (TPM 2.0 Part 1 §25.2): restricted
 * signing keys refuse to sign anything that starts with TPM_GENERATED_VALUE, which is what
 * makes a quote's magic meaningful; fixedTPM/fixedParent/sensitiveDataOrigin mean the
 * private part was made inside this TPM and can never leave it.
 * Every violation is listed at once so an operator fixes the template in one go.
 */
export function checkAttestationKey(ak: TpmPublic, options: { allowSha1?: boolean } = {}): void {
  // Verifiers call this on every quote with the agent's one parsed AK: remember passes.
  const passed = options.allowSha1 ? passedWithSha1 : passedStrict;
  if (passed.has(ak)) return;
  const problems: string[] = [];
  for (const [attr, wanted] of REQUIRED) {
    if (((ak.objectAttributes & TPMA_OBJECT[attr]) !== 0) !== wanted) problems.push(wanted ? `${attr} not set` : `${attr} set`);
  }
  if (ak.type === 'rsa' && ak.keyBits < 2048) problems.push(`RSA key of ${ak.keyBits} bits (2048 at least)`);
  if (ak.type === 'ecc' && ak.curve !== TPM_ECC.NIST_P256 && ak.curve !== TPM_ECC.NIST_P384) {
    problems.push('ECC curve is not P-256 or P-384');
  }
  // A TPM refuses to create a restricted signing key without a scheme (TPM_RC_SCHEME), so the
  // AK always names the one scheme its signatures must use.
  const schemes: readonly number[] = ak.type === 'rsa' ? [TPM_ALG.RSASSA, TPM_ALG.RSAPSS] : [TPM_ALG.ECDSA];
  if (!ak.scheme || !schemes.includes(ak.scheme.scheme)) problems.push('no RSASSA, RSAPSS or ECDSA signing scheme');
  if (!options.allowSha1 && (ak.nameAlg === TPM_ALG.SHA1 || ak.scheme?.hashAlg === TPM_ALG.SHA1)) {
    problems.push('uses SHA-1');
  }
  if (problems.length > 0) {
    throw new PolicyError('ERR_AK_ATTRIBUTES', `not an attestation key: ${problems.join(', ')}`);
  }
  passed.add(ak);
}

/**
 * For an AK known only as a key (PEM input to the CLI): what can be checked without its
 * public area. RSA of 2048 bits or more with a real exponent; ECC on P-256 or P-384.
 */
export function checkAttestationKeyObject(key: KeyObject): void {
  if (checkedKeys.has(key)) return;
  const d = key.asymmetricKeyDetails ?? {};
  const exponent = d.publicExponent ?? 0n;
  const ok =
    key.type === 'public' &&
    (key.asymmetricKeyType === 'rsa'
      ? (d.modulusLength ?? 0) >= 2048 && exponent >= 3n && exponent % 2n === 1n
      : key.asymmetricKeyType === 'ec' && (d.namedCurve === 'prime256v1' || d.namedCurve === 'secp384r1'));
  if (!ok) throw new PolicyError('ERR_KEY_UNSUPPORTED', 'AK must be RSA (2048 bits or more) or ECC P-256/P-384');
  checkedKeys.add(key);
}

const checkedKeys = new WeakSet<KeyObject>();

const passedStrict = new WeakSet<TpmPublic>();
const passedWithSha1 = new WeakSet<TpmPublic>();
