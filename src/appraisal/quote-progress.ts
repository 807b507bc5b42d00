import { VerificationError } from '../errors.js';
import type { ClockInfo } from '../tpm/attest.js';

/**
 * Compares a verified quote's clock with the agent's last accepted one. Within one power
 * cycle (same resetCount and restartCount) the TPM clock only moves forward, so a clock
 * that went back is a replayed or forged state. Across a reset or restart the counters
 * differ; they are obfuscated for keys outside the endorsement hierarchy (Part 1 §36.6), so
 * only their equality is meaningful, not their order.
 * Call it only after the quote's signature was verified: unsigned counters prove nothing.
 */
export function checkQuoteProgress(previous: ClockInfo | undefined, current: ClockInfo): void {
  if (!previous) return;
  const samePowerCycle = previous.resetCount === current.resetCount && previous.restartCount === current.restartCount;
  if (samePowerCycle && current.clock < previous.clock) {
    throw new VerificationError(
      'ERR_QUOTE_CLOCK_ROLLBACK',
      `TPM clock went back from ${previous.clock} to ${current.clock} ms without a reset or restart`,
    );
  }
}
