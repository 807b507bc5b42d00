import { AttestorError, ParseError } from '../errors.js';
import { hashByName, TPM_ALG } from '../tpm/constants.js';
import { PCR_COUNT, type PcrValues } from '../tpm/pcr-selection.js';
import { TpmWriter } from '../tpm/writer.js';

/*
 * The command parameters the agent marshals for its TPM (through native/): PCR selections,
 * digests to extend, signing schemes. The TPM's replies are parsed in src/tpm/ (capability.ts,
 * nv-public.ts, pcr-read.ts), with the same bounded reader as everything the verifier parses.
 */

/** PCRs to read or quote, by bank name as tpm2-tools spells it: { sha256: [0, 1, 7] }. */
export type PcrSelectionSpec = { readonly [bank: string]: readonly number[] };

/** A signing scheme for TPM2_Quote/Certify/Sign; omitted = the key's own scheme (TPM_ALG_NULL). */
export interface SigScheme {
  readonly scheme: 'rsassa' | 'rsapss' | 'ecdsa';
  readonly hash: 'sha1' | 'sha256' | 'sha384' | 'sha512';
}

const SIG_ALG = { rsassa: TPM_ALG.RSASSA, rsapss: TPM_ALG.RSAPSS, ecdsa: TPM_ALG.ECDSA } as const;

/**
 * `spec` with tpm2-tools' bank names (the ones results are keyed by: "SHA256" becomes
 * "sha256") and each PCR once. A bank named twice ({ sha256: [0], SHA256: [1] }) is refused
 * with ERR_TSS_INPUT rather than guessed at; an unknown bank is ERR_TPM_UNSUPPORTED_ALG.
 */
export function canonicalPcrSelection(spec: PcrSelectionSpec): PcrSelectionSpec {
  const out: Record<string, number[]> = {};
  for (const [bank, pcrs] of Object.entries(spec)) {
    const { name } = hashByName(bank);
    if (out[name]) throw new AttestorError('ERR_TSS_INPUT', `PCR selection: the ${name} bank is named twice`);
    out[name] = [...new Set(pcrs)];
  }
  return out;
}

/** TPML_PCR_SELECTION (Part 2 §10.9.7): one TPMS_PCR_SELECTION per bank, 3-byte bitmaps. */
export function marshalPcrSelection(spec: PcrSelectionSpec): Uint8Array {
  const banks = Object.entries(canonicalPcrSelection(spec));
  const w = new TpmWriter().u32(banks.length);
  for (const [bank, pcrs] of banks) {
    const bitmap = new Uint8Array(PCR_COUNT / 8);
    for (const pcr of pcrs) {
      if (!Number.isInteger(pcr) || pcr < 0 || pcr >= PCR_COUNT) {
        throw new ParseError('ERR_TPM_BAD_VALUE', `PCR selection: ${bank} PCR ${pcr} is not in 0..${PCR_COUNT - 1}`);
      }
      bitmap[pcr >> 3]! |= 1 << (pcr & 7);
    }
    w.u16(hashByName(bank).alg).u8(bitmap.length).bytes(bitmap);
  }
  return w.finish();
}

/** TPML_DIGEST_VALUES (Part 2 §10.9.6) for TPM2_PCR_Extend: one TPMT_HA per bank. */
export function marshalDigestValues(digests: { readonly [bank: string]: Uint8Array }): Uint8Array {
  const entries = Object.entries(digests);
  const w = new TpmWriter().u32(entries.length);
  for (const [bank, digest] of entries) {
    const hash = hashByName(bank);
    if (digest.length !== hash.size) {
      throw new ParseError('ERR_TPM_SIZE_MISMATCH', `PCR extend: a ${bank} digest is ${hash.size} bytes, got ${digest.length}`);
    }
    w.u16(hash.alg).bytes(digest);
  }
  return w.finish();
}

/** TPMT_SIG_SCHEME (Part 2 §11.2.1.5); undefined = TPM_ALG_NULL, i.e. the key's scheme. */
export function marshalSigScheme(scheme?: SigScheme): Uint8Array {
  if (!scheme) return new TpmWriter().u16(TPM_ALG.NULL).finish();
  return new TpmWriter().u16(SIG_ALG[scheme.scheme]).u16(hashByName(scheme.hash).alg).finish();
}

/** The selection still to read after `read`: TPM2_PCR_Read answers a prefix of what was asked. */
export function remainingSelection(asked: PcrSelectionSpec, read: PcrValues): PcrSelectionSpec {
  const rest: Record<string, number[]> = {};
  for (const [bank, pcrs] of Object.entries(asked)) {
    const left = pcrs.filter((p) => read[bank]?.[p] === undefined);
    if (left.length > 0) rest[bank] = left;
  }
  return rest;
}
