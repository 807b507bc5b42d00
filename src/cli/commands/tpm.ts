import { mkdir, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { TPM_PT, type PcrSelectionSpec } from '../../agent/tpm-marshal.js';
import { TpmSession } from '../../agent/tpm-session.js';
import { ekTemplate, type KeyType } from '../../agent/tpm-templates.js';
import { openTpm, type Attestation, type Tpm } from '../../agent/tss.js';
import { AttestorError, isAttestorError } from '../../errors.js';
import { EK_CERT_NV } from '../../tpm/constants.js';
import { parseEkCertificate, verifyEkCertificate } from '../../tpm/ek-certificate.js';
import type { EkRootStore } from '../../tpm/ek-roots.js';
import { encodePcrFile } from '../../tpm/pcr-file.js';
import { formatPcrSelection, parsePcrSelectionSpec, type PcrBankSelection, type PcrValues } from '../../tpm/pcr-selection.js';
import { parseTpm2bPublic, type TpmPublic } from '../../tpm/public.js';
import { publicKeyOf } from '../../tpm/public-key.js';
import { hex } from '../../bytes.js';
import { parseHex, UsageError, type CliIo } from '../io.js';
import { DEFAULT_EK_ROOTS, loadEkRootStore } from '../root-store.js';

/*
 * `attestor-agent tpm info|quote`: what a host operator checks with the machine's TPM before
 * enrolling it, offline (no verifier involved). The TPM is reached through the node-tss addon,
 * which loads only when a command opens the TPM.
 */

/** TPM_PT fixed properties (Part 2 §6.13) reported here beyond those the agent's marshalling names. */
const PT = { ...TPM_PT, LEVEL: 0x101, DAY_OF_YEAR: 0x103, YEAR: 0x104 } as const;
/** From TPM_PT_FAMILY_INDICATOR to TPM_PT_FIRMWARE_VERSION_2: the identity properties, one capability call. */
const IDENTITY_PROPERTIES = PT.FIRMWARE_VERSION_2 - PT.FAMILY_INDICATOR + 1;

/**
 * The EK certificates `tpm info` reports (src/tpm/constants.ts EK_CERT_NV): the low range
 * (templates L-1, L-2, whose EK this code can re-derive to compare keys) and H-1..H-3.
 */
const EK_CERTIFICATES: readonly { index: number; key: string; template: string; ekType?: KeyType }[] = [
  { index: EK_CERT_NV.rsa2048, key: 'RSA 2048', template: 'L-1', ekType: 'rsa' },
  { index: EK_CERT_NV.eccP256, key: 'ECC NIST P-256', template: 'L-2', ekType: 'ecc' },
  { index: EK_CERT_NV.rsa2048High, key: 'RSA 2048', template: 'H-1' },
  { index: EK_CERT_NV.eccP256High, key: 'ECC NIST P-256', template: 'H-2' },
  { index: EK_CERT_NV.eccP384, key: 'ECC NIST P-384', template: 'H-3' },
];

/** TPM2B_DATA holds at most sizeof(TPMU_HA) = 64 bytes (Part 2 §10.4.3): the longest qualifying data. */
const NONCE_MAX = 64;

/**
 * Quote attempts before giving up on PCRs that keep changing (a busy IMA extends PCR 10 all
 * the time): bounded so the command cannot spin.
 */
const QUOTE_ATTEMPTS = 5;

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
    await mkdir(dir, { recursive: true, mode });
  } catch (e) {
    throw new UsageError(`cannot create ${option} ${dir}: ${(e as NodeJS.ErrnoException).code ?? 'failed'}`);
  }
}

/** Refuses, before quoting, PCRs the TPM does not have: it would leave them out of the quote without a word. */
async function requirePcrs(tpm: Tpm, wanted: readonly PcrBankSelection[]): Promise<void> {
  const banks = await tpm.getPcrBanks();
  for (const { hash, pcrs } of wanted) {
    const bank = banks.find((b) => b.hash.alg === hash.alg);
    if (!bank) {
      const has = banks.map((b) => b.hash.name).join(', ') || 'none';
      throw new AttestorError('ERR_TPM_CAPABILITY', `the TPM has no ${hash.name} PCR bank allocated (it has: ${has})`);
    }
    const missing = pcrs.filter((p) => !bank.pcrs.includes(p));
    if (missing.length > 0) throw new AttestorError('ERR_TPM_CAPABILITY', `the TPM's ${hash.name} bank has no PCR ${missing.join(', ')}`);
  }
}

export interface QuoteWithValues extends Attestation {
  /** The PCR values the quote signed, banks in the order of its selection. */
  readonly values: PcrValues;
  /** Quotes taken: more than one when the PCRs changed meanwhile. */
  readonly attempts: number;
}

/**
 * TPM2_Quote and the values of the PCRs it covers. Reading PCRs is not atomic with quoting, so
 * the TPM's pcrUpdateCounter (Part 2 §10.9.7, bumped by every extend) is read before the quote
 * and again with the values after it: equal counters mean no PCR changed in between, so the
 * values are those the quote signed. Otherwise it tries again, at most `maxAttempts` times.
 */
export async function quoteWithPcrValues(
  session: TpmSession,
  selection: PcrSelectionSpec,
  nonce: Uint8Array,
  maxAttempts = QUOTE_ATTEMPTS,
): Promise<QuoteWithValues> {
  // An empty selection reads only the counter.
  let counter = (await session.tpm.pcrRead({})).updateCounter;
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    const quote = await session.quote(selection, nonce);
    const after = await session.tpm.pcrRead(selection);
    if (after.updateCounter === counter) {
      const values = Object.fromEntries(Object.keys(selection).map((bank) => [bank, after.values[bank] ?? {}]));
      return { ...quote, values, attempts: attempt };
    }
    counter = after.updateCounter;
  }
  throw new AttestorError(
    'ERR_TPM_PCRS_UNSTABLE',
    `the PCRs changed while each of ${maxAttempts} quotes was taken; try again when the host is quieter`,
  );
}

/** What `tpm info` reports; fields the TPM does not report are absent. */
export interface TpmInfo {
  readonly tcti: string;
  /** TPM_PT_MANUFACTURER as the TCG attributes of EK certificates write it ("id:49424D00") and in ASCII ("IBM"). */
  readonly manufacturer?: { readonly id: string; readonly ascii: string };
  /** TPM_PT_VENDOR_STRING_1..4. */
  readonly vendor?: string;
  /** TPM_PT_FIRMWARE_VERSION_1 || _2 in hex, as TPMS_ATTEST.firmwareVersion carries it. */
  readonly firmwareVersion?: string;
  readonly spec: { readonly family?: string; readonly level?: number; readonly revision?: number; readonly year?: number; readonly dayOfYear?: number };
  readonly pcrBanks: readonly { readonly bank: string; readonly pcrs: number }[];
  readonly ekCertificates: readonly EkCertificateReport[];
}

export interface EkCertificateReport {
  /** "0x01c00002". */
  readonly nvIndex: string;
  readonly key: string;
  /** EK template of the TCG EK Credential Profile ("L-1"). */
  readonly template: string;
  readonly subject?: string;
  readonly issuer?: string;
  /** TCG attributes of the certificate (tcg-at-tpmManufacturer, -tpmModel, -tpmVersion). */
  readonly tpmManufacturer?: string;
  readonly tpmModel?: string;
  readonly tpmVersion?: string;
  /** The root store entry the certificate chains to. */
  readonly anchor?: string;
  /** The certificate certifies the EK this TPM derives from the template (checked for L-1 and L-2). */
  readonly ekKeyChecked?: boolean;
  /** Why the certificate does not parse, chain or match. */
  readonly error?: { readonly code: string; readonly message: string };
}

async function readTpmInfo(tpm: Tpm, store: EkRootStore): Promise<TpmInfo> {
  const p = await tpm.getProperties(PT.FAMILY_INDICATOR, IDENTITY_PROPERTIES);
  const text = (...props: number[]) => {
    const values = props.map((prop) => p.get(prop));
    return values.every((v) => v === undefined) ? undefined : values.map((v) => (v === undefined ? '' : propertyText(v))).join('');
  };
  const manufacturer = p.get(PT.MANUFACTURER);
  const [fw1, fw2] = [p.get(PT.FIRMWARE_VERSION_1), p.get(PT.FIRMWARE_VERSION_2)];
  const present = new Set(await tpm.getHandles(EK_CERT_NV.rsa2048));
  const ekCertificates: EkCertificateReport[] = [];
  for (const slot of EK_CERTIFICATES.filter((c) => present.has(c.index))) {
    const der = await tpm.nvRead(slot.index);
    const ekPublic = slot.ekType && (await derivedEk(tpm, slot.ekType));
    ekCertificates.push({
      nvIndex: `0x${slot.index.toString(16).padStart(8, '0')}`,
      key: slot.key,
      template: slot.template,
      ...checkEkCertificate(der, store, ekPublic),
    });
  }
  return {
    tcti: tpm.tcti,
    manufacturer:
      manufacturer === undefined
        ? undefined
        : { id: `id:${manufacturer.toString(16).toUpperCase().padStart(8, '0')}`, ascii: propertyText(manufacturer).trim() },
    vendor: text(PT.VENDOR_STRING_1, PT.VENDOR_STRING_2, PT.VENDOR_STRING_3, PT.VENDOR_STRING_4),
    firmwareVersion: fw1 === undefined || fw2 === undefined ? undefined : ((BigInt(fw1) << 32n) | BigInt(fw2)).toString(16),
    spec: {
      family: text(PT.FAMILY_INDICATOR),
      level: p.get(PT.LEVEL),
      revision: p.get(PT.REVISION),
      year: p.get(PT.YEAR),
      dayOfYear: p.get(PT.DAY_OF_YEAR),
    },
    pcrBanks: (await tpm.getPcrBanks()).map((b) => ({ bank: b.hash.name, pcrs: b.pcrs.length })),
    ekCertificates,
  };
}

/** A UINT32 property that holds four characters (Part 2 §6.13), without its NUL padding. */
function propertyText(value: number): string {
  return Buffer.from([value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff]).toString('latin1').replace(/\0/g, '');
}

/** The EK this TPM derives from the default template, for comparison with its certificate. */
async function derivedEk(tpm: Tpm, type: KeyType): Promise<TpmPublic> {
  const ek = await tpm.createPrimary('endorsement', ekTemplate(type));
  await tpm.flushContext(ek.handle);
  return parseTpm2bPublic(ek.public);
}

function checkEkCertificate(der: Uint8Array, store: EkRootStore, ekPublic?: TpmPublic): Omit<EkCertificateReport, 'nvIndex' | 'key' | 'template'> {
  let facts: Omit<EkCertificateReport, 'nvIndex' | 'key' | 'template'> = {};
  try {
    const cert = parseEkCertificate(der);
    facts = {
      subject: cert.certificate.subject,
      issuer: cert.certificate.issuer,
      tpmManufacturer: cert.manufacturer?.id,
      tpmModel: cert.model,
      tpmVersion: cert.version,
    };
    const verified = verifyEkCertificate(cert, store, { ekPublic });
    return { ...facts, anchor: verified.anchor, ekKeyChecked: ekPublic !== undefined };
  } catch (e) {
    if (!isAttestorError(e)) throw e;
    return { ...facts, error: { code: e.code, message: e.message } };
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
