/*
 * PCR indexes as logs, rules and stored appraisal states give them.
 */

/** TPM2_MAX_PCRS on any PC Client TPM is 24; 32 is the bitmap the PFP allows for. */
export const MAX_PCR_INDEX = 31;

/**
 * The PCR a JSON key names: decimal without leading zeros ("7", not "07" or "7.0"), at most
 * `max`; undefined for any other key.
 */
export function pcrIndexOfKey(key: string, max: number): number | undefined {
  if (!/^(0|[1-9]\d?)$/.test(key)) return undefined;
  const index = Number(key);
  return index <= max ? index : undefined;
}
