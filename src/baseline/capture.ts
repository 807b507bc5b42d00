import { z } from 'zod';
import { AttestorError } from '../errors.js';
import { KEY_RESIDENCES, parseBaselineDocument, type BaselineDocument, type KeyResidence } from './document.js';

/*
 * Capture: a staged baseline made from what an agent's last authentic evidence proved, for an
 * operator to review and enforce (SERVICE "baselines ... capture from an agent's last verified
 * evidence"). `appraise` returns the CapturedEvidence, the service stores it as the agent's
 * `lastEvidence`, and captureBaseline turns it into a document that pins every PCR the quote
 * signed to the value it had.
 */

/** What an appraisal proved, kept per agent (JSON) for capture. */
export type CapturedEvidence = {
  readonly version: 1;
  /** Every PCR of the quote's signed selection, verified by its pcrDigest: lowercase hex by bank and index. */
  readonly pcrs: { readonly [bank: string]: { readonly [index: string]: string } };
  /** Where the attested key lives, as its evidence proved. */
  readonly keyResidence: KeyResidence;
  /** Secure boot as the appraised event log proved it; absent when no log was appraised or it proved neither. */
  readonly secureBoot?: boolean;
};

export interface CaptureOptions {
  /** JWT audiences the baseline allows; default none. */
  readonly audiences?: readonly string[];
  /** Host labels the baseline applies to; default every agent. */
  readonly selector?: { readonly [name: string]: string };
}

const CAPTURED_EVIDENCE = z.strictObject({
  version: z.literal(1),
  pcrs: z.record(z.string().max(8), z.record(z.string().max(2), z.string().regex(/^[0-9a-f]{40,128}$/))),
  keyResidence: z.enum(KEY_RESIDENCES),
  secureBoot: z.boolean().optional(),
});

/** Stored evidence back from the database: ERR_NO_EVIDENCE when it is not what appraise returned. */
export function parseCapturedEvidence(value: unknown): CapturedEvidence {
  const parsed = CAPTURED_EVIDENCE.safeParse(value);
  if (!parsed.success) throw new AttestorError('ERR_NO_EVIDENCE', "the agent's stored evidence is not usable: it must attest again");
  return parsed.data;
}

/**
 * A baseline document allowing exactly the PCR values of `evidence`, for TPM-certified keys:
 * the residence the host used is its own choice, so a captured baseline never opts in to
 * PKCS#11 key reports (an operator adds that to a document deliberately). SHA-1 values are left out when a stronger bank was quoted; when SHA-1 is all there
 * is (a legacy TPM), they are kept and the document allows SHA-1, for the operator to review.
 * Throws ERR_NO_EVIDENCE for evidence that is not CapturedEvidence, ERR_BASELINE_INVALID when
 * the options are refused by the document's rules.
 */
export function captureBaseline(evidence: CapturedEvidence, options: CaptureOptions = {}): BaselineDocument {
  const { pcrs } = parseCapturedEvidence(evidence);
  const banks = Object.keys(pcrs).filter((bank) => Object.keys(pcrs[bank]!).length > 0);
  if (banks.length === 0) throw new AttestorError('ERR_NO_EVIDENCE', "the agent's evidence holds no PCR value to pin: its quote selected none");
  const sha1Only = banks.every((bank) => bank === 'sha1');
  const pinned = banks
    .filter((bank) => sha1Only || bank !== 'sha1')
    .map((bank) => [bank, Object.fromEntries(Object.entries(pcrs[bank]!).map(([index, value]) => [index, [value]]))]);
  return parseBaselineDocument({
    version: 1,
    ...(options.selector && { selector: { labels: options.selector } }),
    pcrs: Object.fromEntries(pinned),
    key: { residence: ['tpm'] },
    audiences: options.audiences ?? [],
    allowSha1: sha1Only,
  });
}
