import { VerificationError } from '../errors.js';
import type { ClockInfo } from '../tpm/attest.js';

/**
 * Compares a verified quote's clock with the agent's last accepted one.
 * - Same resetCount: the TPM has not been reset since, and its Clock only moves forward (a
 *   TPM2_Shutdown(STATE) before a Restart saves it; an unorderly shutdown forces a Reset),
 *   whatever restartCount did. A clock that went back is a restored or replayed TPM state.
 * - resetCount went back: the TPM was cleared (TPM2_Clear zeroes it) or an old state was
 *   restored. Either way the agent must enroll again.
 * For keys outside the endorsement hierarchy the counters are obfuscated by a per-key
 * offset (Part 1 §36.6), which keeps their order modulo 2^32: hence the modular comparison.
 * Call it only after the quote's signature was verified: unsigned counters prove nothing.
 */
export function checkQuoteProgress(previous: ClockInfo | undefined, current: ClockInfo): void {
  if (!previous) return;
  const resetsSince = (current.resetCount - previous.resetCount) >>> 0;
  if (resetsSince === 0 && current.clock < previous.clock) {
    throw new VerificationError(
      'ERR_QUOTE_CLOCK_ROLLBACK',
      `TPM clock went back from ${previous.clock} to ${current.clock} ms without a reset`,
    );
  }
  if (resetsSince >= 0x80000000) {
    throw new VerificationError(
      'ERR_QUOTE_CLOCK_ROLLBACK',
      'TPM resetCount went back (TPM cleared or an old state restored): the agent must enroll again',
    );
  }
}
