// `npm run fuzz -- --minutes N [--seed S] [--target name] [--findings DIR]`: the fuzz targets of
// src/dev/fuzz-targets.ts (from the build) for N minutes, seeded from the shared vectors
// (ATTESTOR_VECTORS, else ../shared/vectors) and fixtures/, mutated (bit flips, truncation,
// splicing, length fields). A crash (any exception but an AttestorError with a stable code), an
// input slower than --slow-ms, a hang (no progress for --hang-ms: the worker is ended and
// restarted) or a super-linear target is a finding: saved with its input, and the exit code is 1.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const root = fileURLToPath(new URL('..', import.meta.url));
const targetsModule = join(root, 'dist/dev/fuzz-targets.js');
/** Per-byte slowdown over a sixteenfold growth, seen twice, that counts as super-linear (quadratic gives 16). */
const SUPER_LINEAR = 6;
/** Header of the shared buffer: executions, index of the target running, length of its input, 1 while a running-time check runs. */
const EXECS = 0;
const TARGET = 1;
const LENGTH = 2;
const TIMING = 3;
/** A running-time check times a target up to 4 MiB inputs a dozen times: it gets this many hang budgets. */
const TIMING_BUDGETS = 6;
const HEADER_BYTES = 16;

if (isMainThread) await main();
else await work(workerData);

async function main() {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string', default: '1' },
      seed: { type: 'string' },
      target: { type: 'string' },
      findings: { type: 'string', default: join(tmpdir(), 'attestor-fuzz-findings') },
      'slow-ms': { type: 'string', default: '250' },
      'hang-ms': { type: 'string', default: '5000' },
    },
  });
  const minutes = Number(values.minutes);
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
  const slowMs = Number(values['slow-ms']);
  const hangMs = Number(values['hang-ms']);
  if (!(minutes > 0) || !Number.isInteger(seed) || !(slowMs > 0) || !(hangMs > slowMs)) {
    console.error('usage: npm run fuzz -- --minutes N [--seed S] [--target name] [--findings DIR] [--slow-ms 250] [--hang-ms 5000]');
    process.exit(2);
  }
  const { FUZZ_TARGETS, MAX_MUTANT_BYTES } = await import(targetsModule);
  const names = FUZZ_TARGETS.map((t) => t.name);
  if (values.target !== undefined && !names.includes(values.target)) {
    console.error(`no target "${values.target}"; the targets: ${names.join(', ')}`);
    process.exit(2);
  }
  const vectors = process.env.ATTESTOR_VECTORS ?? join(root, '../shared/vectors');
  const corpusRoots = [existsSync(vectors) ? vectors : undefined, join(root, 'fixtures')].filter(Boolean);
  if (!existsSync(vectors)) console.warn(`fuzz: no shared vectors at ${vectors} (set ATTESTOR_VECTORS): fixtures and built-in seeds only`);

  const until = Date.now() + minutes * 60_000;
  const shared = new SharedArrayBuffer(HEADER_BYTES + MAX_MUTANT_BYTES);
  const header = new Int32Array(shared, 0, HEADER_BYTES / 4);
  const stats = Object.fromEntries(names.map((n) => [n, { execs: 0, corpus: 0, outcomes: 0, failures: 0 }]));
  const seen = new Set();
  const saved = [];

  const record = (finding) => {
    const key = `${finding.target}|${finding.kind}|${String(finding.error).replace(/\d+/g, 'N')}`;
    if (seen.has(key)) return;
    seen.add(key);
    (stats[finding.target] ??= { execs: 0, corpus: 0, outcomes: 0, failures: 0 }).failures++;
    mkdirSync(values.findings, { recursive: true });
    const input = Buffer.from(finding.input);
    const file = join(values.findings, `${finding.target}-${finding.kind}-${createHash('sha256').update(input).digest('hex').slice(0, 12)}`);
    writeFileSync(`${file}.bin`, input);
    writeFileSync(`${file}.txt`, `target: ${finding.target}\nkind: ${finding.kind}\nerror: ${finding.error}\nseed: ${seed}\ninput: ${input.length} bytes\n`);
    saved.push(`${file}.bin`);
    console.log(`finding: ${finding.target} ${finding.kind}: ${finding.error} (${input.length} bytes) -> ${file}.bin`);
  };

  // A target that hung is left out from then on: it would hang the next worker too.
  const hung = [];
  for (;;) {
    const run = {};
    const done = await runWorker({ seed: seed + hung.length, target: values.target, skip: hung, corpusRoots, until, slowMs, shared, targetsModule }, run, record, header, hangMs);
    for (const [name, s] of Object.entries(run)) {
      stats[name].execs += s.execs;
      stats[name].corpus = Math.max(stats[name].corpus, s.corpus);
      stats[name].outcomes = Math.max(stats[name].outcomes, s.outcomes);
    }
    if (done) break;
    // A hang: what the worker was running is in the shared buffer.
    const target = names[Atomics.load(header, TARGET)];
    const input = new Uint8Array(shared, HEADER_BYTES, Atomics.load(header, LENGTH)).slice();
    record({ target, kind: 'hang', error: `no result within ${hangMs} ms`, input });
    hung.push(target);
    if (Date.now() >= until || hung.length === names.length || values.target !== undefined) break;
  }

  console.log(`\nfuzz: seed ${seed}, ${minutes} minute(s), findings in ${values.findings}`);
  console.log(`${'target'.padEnd(22)} ${'execs'.padStart(10)} ${'corpus'.padStart(7)} ${'outcomes'.padStart(8)} ${'failures'.padStart(8)}`);
  let total = 0;
  for (const [name, s] of Object.entries(stats)) {
    if (values.target !== undefined && name !== values.target) continue;
    total += s.execs;
    console.log(`${name.padEnd(22)} ${String(s.execs).padStart(10)} ${String(s.corpus).padStart(7)} ${String(s.outcomes).padStart(8)} ${String(s.failures).padStart(8)}${hung.includes(name) ? '  (hung: left out after)' : ''}`);
  }
  console.log(`${'all'.padEnd(22)} ${String(total).padStart(10)}   ${seen.size} distinct finding(s)`);
  process.exitCode = seen.size > 0 ? 1 : 0;
}

/** Runs one worker until the time is up (true) or it hangs (false: it was ended). */
function runWorker(data, run, record, header, hangMs) {
  return new Promise((resolve) => {
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: data });
    let lastExecs = -1;
    let lastProgress = Date.now();
    const watchdog = setInterval(() => {
      const execs = Atomics.load(header, EXECS);
      if (execs !== lastExecs) {
        lastExecs = execs;
        lastProgress = Date.now();
      } else if (Date.now() - lastProgress > hangMs * (Atomics.load(header, TIMING) === 1 ? TIMING_BUDGETS : 1)) {
        clearInterval(watchdog);
        worker.removeAllListeners('exit');
        void worker.terminate().then(() => resolve(false));
      }
    }, 100);
    worker.on('message', (m) => {
      if (m.type === 'finding') record(m);
      else Object.assign(run, m.stats);
    });
    worker.on('error', (e) => {
      record({ target: 'worker', kind: 'crash', error: String(e?.stack ?? e), input: new Uint8Array() });
    });
    worker.on('exit', () => {
      clearInterval(watchdog);
      resolve(true);
    });
  });
}

async function work({ seed, target, skip, corpusRoots, until, slowMs, shared, targetsModule: module }) {
  const { FUZZ_TARGETS, corpusFiles, seedsOf, createRng, mutate, outcomeOf, growthPerByte } = await import(module);
  const header = new Int32Array(shared, 0, HEADER_BYTES / 4);
  const inputArea = new Uint8Array(shared, HEADER_BYTES);
  const files = corpusRoots.flatMap((r) => corpusFiles(r));
  const states = FUZZ_TARGETS.map((t, index) => {
    const seeds = seedsOf(t, files);
    // Random bytes stand in where nothing seeds a target.
    const corpus = seeds.length > 0 ? seeds : [new Uint8Array(64).map((_, i) => (i * 37) & 0xff)];
    const nameHash = createHash('sha256').update(t.name).digest().readUInt32BE(0);
    return { t, index, corpus, outcomes: new Set(), execs: 0, failures: 0, rand: createRng((seed ^ nameHash) >>> 0), nextGrowthCheck: 0 };
  }).filter((s) => (target === undefined || s.t.name === target) && !skip.includes(s.t.name));

  const finding = (s, kind, error, input) => {
    s.failures++;
    parentPort.postMessage({ type: 'finding', target: s.t.name, kind, error, input });
  };
  const report = () =>
    parentPort.postMessage({
      type: 'stats',
      stats: Object.fromEntries(states.map((s) => [s.t.name, { execs: s.execs, corpus: s.corpus.length, outcomes: s.outcomes.size }])),
    });

  let lastReport = Date.now();
  while (Date.now() < until) {
    for (const s of states) {
      const sliceEnd = Math.min(Date.now() + 200, until);
      while (Date.now() < sliceEnd) {
        const input = s.rand(8) === 0 ? randomBytes(s.rand, 1 + s.rand(1024)) : mutate(s.rand, s.corpus[s.rand(s.corpus.length)], s.corpus[s.rand(s.corpus.length)]);
        inputArea.set(input);
        Atomics.store(header, LENGTH, input.length);
        Atomics.store(header, TARGET, s.index);
        const started = performance.now();
        const outcome = outcomeOf(s.t, input);
        const ms = performance.now() - started;
        Atomics.add(header, EXECS, 1);
        s.execs++;
        if (outcome.kind === 'crash') finding(s, 'crash', outcome.error, input);
        else if (ms > slowMs) finding(s, 'slow', `${Math.round(ms)} ms`, input);
        // An input with an outcome not seen before joins the corpus: a cheap stand-in for coverage.
        const key = outcome.kind === 'refused' ? outcome.code : outcome.kind;
        if (!s.outcomes.has(key)) {
          s.outcomes.add(key);
          if (outcome.kind !== 'crash') s.corpus.push(input);
        }
      }
      if (s.t.grow && Date.now() >= s.nextGrowthCheck) {
        s.nextGrowthCheck = Date.now() + 30_000;
        checkGrowth(s);
      }
      if (Date.now() - lastReport > 1000) {
        report();
        lastReport = Date.now();
      }
    }
  }
  report();

  function checkGrowth(s) {
    // The target's own seeds first; mutants of them after (their growth may parse differently).
    const seedInput = s.corpus[s.rand(s.corpus.length)];
    inputArea.set(seedInput);
    Atomics.store(header, LENGTH, seedInput.length);
    Atomics.store(header, TARGET, s.index);
    Atomics.store(header, TIMING, 1);
    let growth;
    try {
      growth = growthPerByte(s.t, seedInput);
      if (growth !== undefined && growth > SUPER_LINEAR) growth = growthPerByte(s.t, seedInput);
    } catch {
      return; // a seed the target's grow cannot extend (a mutant that no longer parses)
    } finally {
      Atomics.store(header, TIMING, 0);
      Atomics.add(header, EXECS, 1);
    }
    if (growth !== undefined && growth > SUPER_LINEAR) finding(s, 'super-linear', `per-byte time x${growth.toFixed(1)} over a sixteenfold input`, seedInput);
  }
}

function randomBytes(rand, n) {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = rand(256);
  return b;
}
