import { writeFile } from 'node:fs/promises';
import { makeDirectories } from '../../agent/make-directories.js';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { quoteWithPcrValues, requirePcrs } from '../../agent/quote-with-values.js';
import { readTpmInfo, type TpmInfo } from '../../agent/tpm-info.js';
import type { PcrSelectionSpec } from '../../agent/tpm-marshal.js';
import { TpmSession } from '../../agent/tpm-session.js';
import type { KeyType } from '../../agent/tpm-templates.js';
import { openTpm } from '../../agent/tss.js';
import { AttestorError, isAttestorError } from '../../errors.js';
import { encodePcrFile } from '../../tpm/pcr-file.js';
import { formatPcrSelection, parsePcrSelectionSpec, type PcrBankSelection } from '../../tpm/pcr-selection.js';
import { parseTpm2bPublic } from '../../tpm/public.js';
import { publicKeyOf } from '../../tpm/public-key.js';
import { hex } from '../../bytes.js';
import { parseHex, UsageError, type CliIo } from '../io.js';
import { DEFAULT_EK_ROOTS, loadEkRootStore } from '../root-store.js';

/*
 * `attestor-agent tpm info|quote`: what a host operator checks with the machine's TPM before
 * enrolling it, offline (no verifier involved). The TPM is reached through the node-tss addon,
 * which loads only when a command opens the TPM.
 */

/** TPM2B_DATA holds at most sizeof(TPMU_HA) = 64 bytes (Part 2 §10.4.3): the longest qualifying data. */
const NONCE_MAX = 64;

export function tpmCommand(io: CliIo): Command {
  const tpm = new Command('tpm').description("this host's TPM, offline: what to check before enrolling the machine");
  tpm
    .command('info')
    .description('manufacturer, firmware, PCR banks, EK certificates and the roots they chain to')
    .addOption(tctiOption())
    .option('--json', 'print the report as JSON')
    .option('--ek-roots <dir>', 'EK root store: a directory of PEM CA certificates', DEFAULT_EK_ROOTS)
    .action(async (opts: { tcti: string; json?: boolean; ekRoots: string }) => {
      const store = loadEkRootStore(opts.ekRoots);
      const tpm = await openTpm(opts.tcti);
      try {
        const info = await readTpmInfo(tpm, store);
        io.out(opts.json ? `${JSON.stringify(info)}\n` : formatTpmInfo(info));
      } finally {
        await tpm.close();
      }
    });
  tpm
    .command('quote')
    .description("quote PCRs with the agent's AK; writes the files tpm2_checkquote and `attestor quote verify` take")
    .addOption(tctiOption())
    .requiredOption('--nonce <hex>', 'qualifying data, 1 to 64 bytes (tpm2_quote -q)')
    .requiredOption('--pcrs <selection>', 'PCR selection as tpm2-tools writes it, e.g. sha256:0,1,2,3,4,5,6,7+sha1:7')
    .addOption(new Option('--ak-type <type>', 'type of the AK when it is created (an existing AK is kept) [default: ecc]').choices(['ecc', 'rsa']))
    .option('--state <dir>', "the agent's state directory, where its AK is kept", defaultStateDir())
    .requiredOption('--out <dir>', 'directory for ak.pem, ak.pub, quote.msg, quote.sig, quote.pcrs')
    .action(async (opts: { tcti: string; nonce: string; pcrs: string; akType?: KeyType; state: string; out: string }) => {
      const banks = pcrSelectionOption(opts.pcrs);
      const nonce = parseHex(opts.nonce, '--nonce');
      if (nonce.length === 0 || nonce.length > NONCE_MAX) throw new UsageError(`--nonce must be 1 to ${NONCE_MAX} bytes`);
      await createDir(opts.state, '--state', 0o700);
      await createDir(opts.out, '--out');
      const session = await TpmSession.open({ tcti: opts.tcti, stateDir: opts.state, akType: opts.akType });
      try {
        const ak = parseTpm2bPublic(session.ak.public);
        if (opts.akType && ak.type !== opts.akType) {
          throw new AttestorError(
            'ERR_TPM_STATE',
            `the AK kept in ${opts.state} is ${ak.type}, not ${opts.akType}: an AK never changes; use another --state for another AK`,
          );
        }
        await requirePcrs(session.tpm, banks);
        const selection: PcrSelectionSpec = Object.fromEntries(banks.map((b) => [b.hash.name, b.pcrs]));
        const quote = await quoteWithPcrValues(session, selection, nonce);
        const files = {
          'ak.pem': publicKeyOf(ak).export({ type: 'spki', format: 'pem' }),
          'ak.pub': session.ak.public,
          'quote.msg': quote.attest,
          'quote.sig': quote.signature,
          'quote.pcrs': encodePcrFile(quote.values),
        };
        for (const [name, content] of Object.entries(files)) await writeFile(join(opts.out, name), content);
        const path = (name: keyof typeof files) => join(opts.out, name);
        io.out(
          `quoted ${formatPcrSelection(banks)} with the ${ak.type} AK ${hex(session.ak.name)}\n` +
            `wrote ${Object.keys(files).join(', ')} to ${opts.out}\n` +
            `check: attestor quote verify --ak ${path('ak.pub')} --quote ${path('quote.msg')} --sig ${path('quote.sig')} ` +
            `--pcrs ${path('quote.pcrs')} --nonce ${hex(nonce)}\n`,
        );
      } finally {
        await session.close();
      }
    });
  return tpm;
}

/** tpm2-tools' convention: the TCTI in TPM2TOOLS_TCTI, else the kernel's resource manager. */
function tctiOption(): Option {
  return new Option('--tcti <tcti>', 'TPM to use: device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321, mssim:...').default(
    process.env.TPM2TOOLS_TCTI || 'device:/dev/tpmrm0',
  );
}

/**
 * Where the agent keeps its AK unless told: systemd's StateDirectory= ($STATE_DIRECTORY) when
 * run as a service, /var/lib/attestor-agent for root, else $XDG_STATE_HOME/attestor-agent
 * (~/.local/state/attestor-agent). The same directory must serve every later run: the AK
 * the verifier enrolls is the one kept there.
 */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env, uid: number | undefined = process.getuid?.()): string {
  if (env.STATE_DIRECTORY) return env.STATE_DIRECTORY.split(':')[0]!;
  if (uid === 0) return '/var/lib/attestor-agent';
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'attestor-agent');
}

function pcrSelectionOption(spec: string): PcrBankSelection[] {
  try {
    return parsePcrSelectionSpec(spec);
  } catch (e) {
    if (isAttestorError(e) && e.code === 'ERR_PCR_SELECTION_SPEC') throw new UsageError(`--pcrs: ${e.message}`);
    throw e;
  }
}

async function createDir(dir: string, option: string, mode?: number): Promise<void> {
  try {
    await makeDirectories(dir, mode);
  } catch (e) {
    throw new UsageError(`cannot create ${option} ${dir}: ${(e as NodeJS.ErrnoException).code ?? 'failed'}`);
  }
}

function formatTpmInfo(info: TpmInfo): string {
  const line = (label: string, value: string | undefined, indent = '') => `${indent}${label.padEnd(16 - indent.length)}${value ?? '(not reported)'}\n`;
  const { spec } = info;
  const fw = info.firmwareVersion?.padStart(16, '0');
  const halves = fw?.match(/.{4}/g)?.map((h) => parseInt(h, 16));
  let out =
    line('TPM', info.tcti) +
    line('manufacturer', info.manufacturer && `${info.manufacturer.ascii} (${info.manufacturer.id})`) +
    line('vendor', info.vendor) +
    line('firmware', fw && `0x${fw} (${halves!.join('.')})`) +
    line(
      'specification',
      `TPM ${spec.family ?? '?'}, level ${spec.level ?? '?'}, revision ${spec.revision === undefined ? '?' : (spec.revision / 100).toFixed(2)}` +
        (spec.year === undefined ? '' : `, ${spec.year} day ${spec.dayOfYear ?? '?'}`),
    ) +
    line('PCR banks', info.pcrBanks.map((b) => `${b.bank} (${b.pcrs} PCRs)`).join(', ') || 'none') +
    line('EK certificates', info.ekCertificates.length === 0 ? 'none' : `${info.ekCertificates.length}`);
  for (const c of info.ekCertificates) {
    out += `  ${c.nvIndex}  ${c.key} (template ${c.template})\n`;
    if (c.issuer !== undefined) {
      out += line('subject', c.subject || '(empty)', '    ');
      out += line('issuer', c.issuer, '    ');
      out += line('TPM', `manufacturer ${c.tpmManufacturer ?? '?'}, model ${c.tpmModel ?? '?'}, version ${c.tpmVersion ?? '?'}`, '    ');
    }
    out += c.error
      ? line('refused', `${c.error.code}: ${c.error.message}`, '    ')
      : line('chains to', `${c.anchor}${c.ekKeyChecked ? " (certifies this TPM's EK)" : ''}`, '    ');
  }
  return out;
}
