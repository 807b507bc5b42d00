import { createPublicKey } from 'node:crypto';
import { Command } from 'commander';
import { verifyQuote } from '../../appraisal/verify-quote.js';
import { ParseError } from '../../errors.js';
import { parsePcrFile } from '../../tpm/pcr-file.js';
import { formatPcrSelection, type PcrValues } from '../../tpm/pcr-selection.js';
import { parseTpm2bPublic } from '../../tpm/public.js';
import type { SigningKey } from '../../tpm/verify-signature.js';
import { hex } from '../../bytes.js';
import { parseHex, readInput, type CliIo } from '../io.js';

interface VerifyOptions {
  ak: string;
  quote: string;
  sig: string;
  pcrs: string;
  nonce: string;
  json?: boolean;
  allowSha1?: boolean;
}

/** `attestor quote verify`: tpm2_checkquote's inputs, Attestor's checks. */
export function quoteCommand(io: CliIo): Command {
  const quote = new Command('quote').description('TPM quotes');
  quote
    .command('verify')
    .description('verify a TPM2_Quote made by tpm2-tools (or the agent) against an AK and a nonce')
    .requiredOption('--ak <file>', 'AK public key: PEM, or TPM2B_PUBLIC as tpm2_createak -u writes it')
    .requiredOption('--quote <file>', 'TPMS_ATTEST (tpm2_quote -m)')
    .requiredOption('--sig <file>', 'TPMT_SIGNATURE (tpm2_quote -s)')
    .requiredOption('--pcrs <file>', 'PCR values in tpm2-tools serialized form (tpm2_quote -o)')
    .requiredOption('--nonce <hex>', 'the qualifying data the quote must carry (tpm2_quote -q)')
    .option('--json', 'print the verified PCR values as JSON')
    .option('--allow-sha1', 'accept legacy SHA-1 signatures and AKs')
    .action((opts: VerifyOptions) => {
      const ak = readAk(readInput(opts.ak, '--ak'));
      const pcrs: PcrValues = parsePcrFile(readInput(opts.pcrs, '--pcrs'));
      const verified = verifyQuote(
        ak,
        { quote: readInput(opts.quote, '--quote'), signature: readInput(opts.sig, '--sig'), pcrs },
        { qualifyingData: parseHex(opts.nonce, '--nonce'), allowSha1: opts.allowSha1 === true },
      );
      const values = Object.fromEntries(
        Object.entries(verified.pcrs).map(([bank, byIndex]) => [
          bank,
          Object.fromEntries(Object.entries(byIndex).map(([i, v]) => [i, hex(v)])),
        ]),
      );
      if (opts.json) {
        const { clock, resetCount, restartCount, safe } = verified.clockInfo;
        io.out(
          `${JSON.stringify({
            valid: true,
            selection: formatPcrSelection(verified.selection),
            pcrs: values,
            clockInfo: { clock: clock.toString(), resetCount, restartCount, safe },
            firmwareVersion: verified.attest.firmwareVersion.toString(16),
          })}\n`,
        );
      } else {
        io.out(`quote valid: ${formatPcrSelection(verified.selection)}\n`);
        for (const [bank, byIndex] of Object.entries(values)) {
          for (const [i, v] of Object.entries(byIndex)) io.out(`  ${bank}:${i} ${v}\n`);
        }
      }
    });
  return quote;
}

/** tpm2-tools accepts either form for `-u`; so do we. */
function readAk(bytes: Uint8Array): SigningKey {
  const text = Buffer.from(bytes).toString('latin1');
  if (!text.includes('-----BEGIN')) return parseTpm2bPublic(bytes);
  try {
    return createPublicKey(text);
  } catch (e) {
    throw new ParseError('ERR_KEY_UNSUPPORTED', '--ak is PEM but not a public key', { cause: e });
  }
}
