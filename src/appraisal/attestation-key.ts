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
  if (!options.allowSha1 && (ak.nameAlg === TPM_ALG.SHA1 || ak.scheme?.hashAlg === TPM_ALG.SHA1)) {
    problems.push('uses SHA-1');
  }
  if (problems.length > 0) {
    throw new PolicyError('ERR_AK_ATTRIBUTES', `not an attestation key: ${problems.join(', ')}`);
  }
  passed.add(ak);
}

const passedStrict = new WeakSet<TpmPublic>();
const passedWithSha1 = new WeakSet<TpmPublic>();
