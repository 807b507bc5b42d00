import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { TpmSession } from '../../dist/agent/tpm-session.js';
import { srkTemplate } from '../../dist/agent/tpm-templates.js';
import { openTpm } from '../../dist/agent/tss.js';
import { encodeCredentialFile } from '../../dist/tpm/credential-file.js';
import { makeCredential } from '../../dist/tpm/make-credential.js';
import { objectName } from '../../dist/tpm/name.js';
import { parseTpm2bPublic } from '../../dist/tpm/public.js';
import { fmt, median } from './measure.mjs';

/*
 * Agent-side figures against one swtpm: the latency of quote, certify and activation through
 * the node-tss addon next to the same TPM operation done with tpm2-tools (one process per tool
 * call, so its time includes process start; the time of a trivial tool call is reported too),
 * and the RSS of the agent process over 10,000 quotes. The swtpm TCTI connects once per TPM
 * command, so those quotes leave about 10,000 sockets in TIME-WAIT for a minute: run the bench
 * alone rather than beside test suites that need free ports.
 */

const SELECTION = { sha256: [0, 1, 2, 3, 4, 5, 6, 7] };
const TOOLS_SELECTION = 'sha256:0,1,2,3,4,5,6,7';
/** Persistent handles for tpm2-tools' own AK and certified key (owner range, Part 2 §7.5). */
const TOOLS_AK = '0x81000100';
const TOOLS_KEY = '0x81000101';
/** The RSA EK swtpm_setup persists (TCG EK Credential Profile: the EK's usual persistent handle). */
const PERSISTENT_EK = 0x81010001;
const RSS_QUOTES = 10_000;
const RSS_WARMUP = 500;
const RSS_LIMIT_MB = 10;
/** argv[2] that makes this module the RSS measuring child. */
const RSS_CHILD = '--rss-child';

/**
 * The swtpm harness of the tests (test/helpers/swtpm.ts), compiled as it is into .bench/ with
 * the TypeScript compiler (no type check; a second or so). The bench runs plain node on dist/,
 * which holds only src/; compiling the one harness beats keeping an .mjs twin of it in step.
 */
async function loadSwtpmHarness(root) {
  const { default: ts } = await import('typescript');
  const outDir = join(root, '.bench', 'harness');
  const program = ts.createProgram([join(root, 'test', 'helpers', 'swtpm.ts')], {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    types: ['node'],
    rootDir: root,
    outDir,
    skipLibCheck: true,
    noCheck: true,
  });
  const { emitSkipped } = program.emit();
  if (emitSkipped) throw new Error('could not compile test/helpers/swtpm.ts');
  return import(pathToFileURL(join(outDir, 'test', 'helpers', 'swtpm.js')).href);
}

/** Median wall time in milliseconds of `runs` calls of an async `fn`, after one warm-up call. */
async function latency(fn, runs) {
  await fn();
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return median(times);
}

export async function benchAgent(root) {
  const { startSwtpm } = await loadSwtpmHarness(root);
  const sw = await startSwtpm();
  try {
    const ours = await measureAddon(sw);
    const tools = await measureTools(sw, ours.ekPublic);
    return report(ours, tools);
  } finally {
    await sw.stop();
  }
}

/** The agent's own path: a TpmSession over the addon (ECC AK, RSA EK, ECC identity key). */
async function measureAddon(sw) {
  const stateDir = join(sw.dir, 'agent-state');
  const session = await TpmSession.open({ tcti: sw.tcti, stateDir, akType: 'ecc' });
  let figures;
  try {
    const nonce = randomBytes(32);
    const cred = makeCredential(parseTpm2bPublic(session.ek.public), session.ak.name, randomBytes(32));
    figures = {
      quote: await latency(() => session.quote(SELECTION, nonce), 200),
      certify: await latency(() => session.certifyIdentityKey(nonce), 200),
      sessionActivate: await latency(() => session.activate(cred.credentialBlob, cred.encryptedSecret), 20),
      ekPublic: session.ek.public,
      akName: session.ak.name,
    };
  } finally {
    await session.close();
  }
  const activate = await activateWithPersistentEk(sw.tcti, stateDir, figures.ekPublic, figures.akName);
  return { ...figures, activate, rss: rssOverQuotes(sw.tcti, stateDir) };
}

/**
 * TPM2_ActivateCredential through the addon with the persistent EK and the agent's AK: the
 * TPM commands tpm2_activatecredential sends (StartAuthSession, PolicySecret, ActivateCredential,
 * FlushContext). TpmSession.activate re-derives the EK first instead, reported beside it.
 */
async function activateWithPersistentEk(tcti, stateDir, ekPublic, akName) {
  const tpm = await openTpm(tcti);
  try {
    const srk = await tpm.createPrimary('owner', srkTemplate('ecc'));
    const ak = await tpm.load(srk.handle, readFileSync(join(stateDir, 'ak.priv')), readFileSync(join(stateDir, 'ak.pub')));
    await tpm.flushContext(srk.handle);
    const ek = await tpm.fromTpmHandle(PERSISTENT_EK);
    const cred = makeCredential(parseTpm2bPublic(ekPublic), akName, randomBytes(32));
    return await latency(() => tpm.activateCredential(ak, ek, cred.credentialBlob, cred.encryptedSecret), 20);
  } finally {
    await tpm.close();
  }
}

/**
 * RSS over RSS_QUOTES quotes, measured in a child process that does nothing else (this one
 * has compiled TypeScript and run other benches, whose garbage would blur the figure), with
 * a full GC before each reading.
 */
function rssOverQuotes(tcti, stateDir) {
  const child = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), RSS_CHILD, tcti, stateDir], { encoding: 'utf8' });
  if (child.status !== 0) throw new Error(`RSS measurement failed: ${child.stderr}`);
  return JSON.parse(child.stdout);
}

async function rssChild(tcti, stateDir) {
  const session = await TpmSession.open({ tcti, stateDir });
  try {
    const nonce = randomBytes(32);
    const rss = () => {
      globalThis.gc();
      return process.memoryUsage.rss();
    };
    for (let i = 0; i < RSS_WARMUP; i++) await session.quote(SELECTION, nonce);
    const start = rss();
    const started = process.hrtime.bigint();
    let middle = 0;
    for (let i = 0; i < RSS_QUOTES; i++) {
      await session.quote(SELECTION, nonce);
      if (i === RSS_QUOTES / 2) middle = rss();
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    process.stdout.write(JSON.stringify({ start, middle, end: rss(), seconds }));
  } finally {
    await session.close();
  }
}

if (process.argv[2] === RSS_CHILD) await rssChild(process.argv[3], process.argv[4]);

/** The same TPM operations with tpm2-tools, keys kept at persistent handles as an operator's script would. */
async function measureTools(sw, ekPublic) {
  const tool = (...args) => {
    const r = spawnSync(args[0], args.slice(1), { cwd: sw.dir, env: sw.env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.error?.message ?? r.stderr}`);
  };
  const timed = (runs, ...calls) =>
    latency(async () => {
      for (const args of calls) tool(...args);
    }, runs);

  // An owner-hierarchy parent, an AK (restricted ECDSA P-256) and a key to certify, made persistent.
  // swtpm has no resource manager: every tool leaves its transient objects loaded, so flush them.
  const setup = (...args) => {
    tool(...args);
    tool('tpm2_flushcontext', '-t');
  };
  setup('tpm2_createprimary', '-C', 'o', '-G', 'ecc', '-c', 'parent.ctx');
  const keys = [
    ['ak', TOOLS_AK, 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign'],
    ['key', TOOLS_KEY, 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign'],
  ];
  for (const [name, handle, attributes] of keys) {
    setup('tpm2_create', '-C', 'parent.ctx', '-G', 'ecc256:ecdsa-sha256:null', '-a', attributes, '-u', `${name}.pub`, '-r', `${name}.priv`);
    setup('tpm2_load', '-C', 'parent.ctx', '-u', `${name}.pub`, '-r', `${name}.priv`, '-c', `${name}.ctx`);
    setup('tpm2_evictcontrol', '-C', 'o', '-c', `${name}.ctx`, handle);
  }
  const akName = objectName(parseTpm2bPublic(readFileSync(join(sw.dir, 'ak.pub'))));
  writeFileSync(join(sw.dir, 'cred.bin'), encodeCredentialFile(makeCredential(parseTpm2bPublic(ekPublic), akName, randomBytes(32))));
  const nonce = randomBytes(32).toString('hex');
  const floor = await timed(30, ['tpm2_getrandom', '8']);
  const quote = await timed(30, ['tpm2_quote', '-c', TOOLS_AK, '-l', TOOLS_SELECTION, '-q', nonce, '-m', 'q.msg', '-s', 'q.sig', '-g', 'sha256']);
  const certify = await timed(30, ['tpm2_certify', '-c', TOOLS_KEY, '-C', TOOLS_AK, '-g', 'sha256', '-o', 'c.msg', '-s', 'c.sig']);
  const activation = [
    ['tpm2_startauthsession', '--policy-session', '-S', 'session.ctx'],
    ['tpm2_policysecret', '-S', 'session.ctx', '-c', 'e'],
    ['tpm2_activatecredential', '-c', TOOLS_AK, '-C', `0x${PERSISTENT_EK.toString(16)}`, '-i', 'cred.bin', '-o', 'secret.out', '-P', 'session:session.ctx'],
    ['tpm2_flushcontext', 'session.ctx'],
  ];
  const activate = await timed(20, ...activation);
  return { floor, quote: { ms: quote, processes: 1 }, certify: { ms: certify, processes: 1 }, activate: { ms: activate, processes: activation.length } };
}

function report(ours, tools) {
  const rows = [];
  const ops = [
    ['quote', 'TPM2_Quote, ECDSA P-256 AK, sha256:0-7'],
    ['certify', 'TPM2_Certify of an ECC key by the AK'],
    ['activate', 'TPM2_ActivateCredential, persistent RSA EK'],
  ];
  for (const [op, what] of ops) {
    const t = tools[op];
    const withoutStart = Math.max(t.ms - t.processes * tools.floor, 0);
    rows.push({
      name: `agent ${what}`,
      value: ours[op],
      unit: 'ms',
      baseline: { name: 'tpm2-tools, process start included', value: t.ms, unit: 'ms' },
      ratio: t.ms / ours[op],
      target: 1.0,
      line:
        `${what.padEnd(42)} addon ${fmt(ours[op], 2).padStart(6)} ms   tpm2-tools ${fmt(t.ms, 2).padStart(6)} ms ` +
        `(${t.processes} process${t.processes > 1 ? 'es' : ''}, incl. start; ~${fmt(withoutStart, 2)} ms without)   ` +
        `ratio tools/addon ${fmt(t.ms / ours[op], 2)} (target >= 1.0)`,
    });
  }
  rows.push({
    name: 'tpm2-tools floor (tpm2_getrandom 8)',
    value: tools.floor,
    unit: 'ms',
    line: `${'tpm2-tools floor (tpm2_getrandom 8)'.padEnd(42)} ${fmt(tools.floor, 2)} ms: process start + TCTI set-up, subtracted above per process`,
  });
  rows.push({
    name: 'agent TpmSession.activate',
    value: ours.sessionActivate,
    unit: 'ms',
    line: `${'TpmSession.activate (re-derives the EK)'.padEnd(42)} addon ${fmt(ours.sessionActivate, 2).padStart(6)} ms: the agent's activation, TPM2_CreatePrimary of the RSA EK included`,
  });
  const mb = (b) => b / (1024 * 1024);
  const { rss } = ours;
  const growth = mb(rss.end - rss.start);
  rows.push({
    name: `agent RSS growth over ${RSS_QUOTES} quotes`,
    value: growth,
    unit: 'MB',
    ratio: growth <= 0 ? Infinity : RSS_LIMIT_MB / growth,
    target: 1.0,
    line:
      `${`RSS over ${fmt(RSS_QUOTES)} quotes (${fmt(RSS_QUOTES / rss.seconds)}/s)`.padEnd(42)} ` +
      `${fmt(mb(rss.start), 1)} -> ${fmt(mb(rss.middle), 1)} (at ${fmt(RSS_QUOTES / 2)}) -> ${fmt(mb(rss.end), 1)} MB ` +
      `(${growth >= 0 ? '+' : ''}${fmt(growth, 1)} MB): ` +
      `${growth < RSS_LIMIT_MB ? 'stable' : 'GROWING'} (target growth < ${RSS_LIMIT_MB} MB)`,
  });
  return rows;
}
