/**
 * Evidence for appraise() as an agent sends it, made with a software AK (tpm-builders.ts): a
 * quote whose qualifying data binds the nonce and the key evidence, the PCR values it signed,
 * and a TPM2_Certify of a key (by default the real swtpm identity key of fixtures/swtpm/ecc)
 * or a PKCS#11 key report signed by a software P-256 key. Each option plays one agent fault.
 */
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { CKK_EC, keyEvidenceMessage, type HsmKeyEvidence, type HsmKeyReport } from '../../src/appraisal/hsm-key-report.js';
import type { AttestationEvidence, KeyEvidence } from '../../src/appraisal/evidence.js';
import { quoteQualifyingData } from '../../src/appraisal/key-binding.js';
import { objectName } from '../../src/tpm/name.js';
import type { PcrValues } from '../../src/tpm/pcr-selection.js';
import { parseTpm2bPublic, type TpmPublic } from '../../src/tpm/public.js';
import { fixture } from '../fixtures.js';
import { buildCertify, buildQuote, softAk, type SoftAk } from './tpm-builders.js';

/** A key made in swtpm under its SRK: fixedTPM, fixedParent, sensitiveDataOrigin, sign (ECC P-256). */
export const TPM_KEY_PUBLIC = fixture('ecc/key.pub');
/** A key made in swtpm that TPM2_Duplicate can move: neither fixedTPM nor fixedParent. */
export const DUPLICABLE_KEY_PUBLIC = fixture('ecc/dup-key.pub');
/** The key TPM_KEY_PUBLIC is, as tpm2_readpublic -f pem wrote it. */
export const TPM_KEY_PEM = fixture('ecc/key.pem');

export interface TestAgent {
  readonly ak: SoftAk;
  /** What the verifier enrolled. */
  readonly akPublic: TpmPublic;
}

export function testAgent(opts: Parameters<typeof softAk>[1] = {}): TestAgent {
  const ak = softAk('ecc', opts);
  return { ak, akPublic: parseTpm2bPublic(ak.public) };
}

/** Signed PCR values by bank (sha256 first in the signed order, then sha1). */
export type SignedPcrs = { readonly sha256?: Readonly<Record<number, Uint8Array>>; readonly sha1?: Readonly<Record<number, Uint8Array>> };

export type KeySpec =
  | {
      readonly kind: 'tpm';
      /** TPM2B_PUBLIC of the certified key; default TPM_KEY_PUBLIC. */
      readonly public?: Uint8Array;
      /** Qualifying data of the certification; default the nonce. */
      readonly certifyData?: Uint8Array;
      /** Name the certification states; default the key's. */
      readonly certifiedName?: Uint8Array;
      readonly certifyMagic?: number;
      /** Who signs the certification; default the agent's AK. */
      readonly certifier?: SoftAk;
      readonly certifyHash?: 'sha1' | 'sha256';
    }
  | { readonly kind: 'pkcs11'; readonly report: HsmKeyReport };

export interface EvidenceSpec {
  readonly nonce: Uint8Array;
  readonly pcrs: SignedPcrs;
  /** The values the agent sends; default the signed ones. */
  readonly sentPcrs?: PcrValues;
  readonly key?: KeySpec;
  readonly clock?: bigint;
  readonly resetCount?: number;
  readonly eventLog?: Uint8Array;
  readonly imaLog?: Uint8Array;
  /** The quote's qualifying data; default quoteQualifyingData(nonce, key evidence). */
  readonly quoteData?: Uint8Array;
  readonly quoteMagic?: number;
  readonly quoteType?: number;
  /** Who signs the quote; default the agent's AK. */
  readonly quoteSigner?: SoftAk;
  readonly quoteHash?: 'sha1' | 'sha256';
}

export function attestation(agent: TestAgent, spec: EvidenceSpec): AttestationEvidence {
  const key = keyEvidence(agent, spec);
  const banks = (['sha256', 'sha1'] as const)
    .filter((bank) => spec.pcrs[bank] !== undefined)
    .map((bank) => ({ bank, values: new Map(Object.entries(spec.pcrs[bank]!).map(([i, v]) => [Number(i), v])) }));
  const quote = buildQuote({
    extraData: spec.quoteData ?? quoteQualifyingData(spec.nonce, key.kind === 'tpm' ? { kind: 'tpm', public: key.public } : { kind: 'pkcs11', evidence: key.report }),
    pcrs: banks,
    ...(spec.clock !== undefined && { clock: spec.clock }),
    ...(spec.resetCount !== undefined && { resetCount: spec.resetCount }),
    ...(spec.quoteMagic !== undefined && { magic: spec.quoteMagic }),
    ...(spec.quoteType !== undefined && { type: spec.quoteType }),
    ...(spec.quoteHash && { digestHash: spec.quoteHash }),
  });
  return {
    quote,
    signature: (spec.quoteSigner ?? agent.ak).sign(quote, { hash: spec.quoteHash ?? 'sha256' }),
    pcrs: spec.sentPcrs ?? spec.pcrs,
    ...(spec.eventLog && { eventLog: spec.eventLog }),
    ...(spec.imaLog && { imaLog: spec.imaLog }),
    key,
  };
}

function keyEvidence(agent: TestAgent, spec: EvidenceSpec): KeyEvidence {
  const k = spec.key ?? { kind: 'tpm' };
  if (k.kind === 'pkcs11') return k;
  const pub = k.public ?? TPM_KEY_PUBLIC;
  const certifyInfo = buildCertify({
    extraData: k.certifyData ?? spec.nonce,
    name: k.certifiedName ?? objectName(parseTpm2bPublic(pub)),
    ...(k.certifyMagic !== undefined && { magic: k.certifyMagic }),
  });
  return { kind: 'tpm', public: pub, certifyInfo, signature: (k.certifier ?? agent.ak).sign(certifyInfo, { hash: k.certifyHash ?? 'sha256' }) };
}

/** A software P-256 key playing the token's key. */
export function hsmKey(curve: 'P-256' | 'P-384' = 'P-256'): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: curve });
}

export const HSM_TOKEN = { manufacturer: 'SoftHSM project', model: 'SoftHSM v2', serial: '8d2f6c0a1b3e', label: 'attestor-agent' };

/** A report as the agent makes it: `changes` applied, signed over keyEvidenceMessage(nonce, evidence) by `signer`. */
export function hsmReport(
  nonce: Uint8Array,
  key = hsmKey(),
  changes: { attributes?: Partial<HsmKeyEvidence['attributes']>; token?: Partial<HsmKeyEvidence['token']>; signer?: KeyObject } = {},
): HsmKeyReport {
  const evidence: HsmKeyEvidence = {
    publicKey: new Uint8Array(key.publicKey.export({ type: 'spki', format: 'der' })),
    attributes: {
      token: true,
      private: true,
      sensitive: true,
      extractable: false,
      neverExtractable: true,
      alwaysSensitive: true,
      local: true,
      keyType: CKK_EC,
      ...changes.attributes,
    },
    token: { ...HSM_TOKEN, ...changes.token },
    alg: 'ES256',
  };
  const signature = sign('sha256', keyEvidenceMessage(nonce, evidence), { key: changes.signer ?? key.privateKey, dsaEncoding: 'ieee-p1363' });
  return { ...evidence, signature: new Uint8Array(signature) };
}
