// `npm run bench [-- --json] [--only <section>...]`: every figure beside a baseline measured in
// the same run where there is one; a figure below its target is marked and makes the exit status 1.
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { benchAgent } from './bench/agent.mjs';
import { benchAttestation } from './bench/attestation.mjs';
import { benchEventlog } from './bench/eventlog.mjs';
import { benchFleet } from './bench/fleet.mjs';
import { benchIma } from './bench/ima.mjs';
import { benchIssuance } from './bench/issuance.mjs';
import { benchQuote } from './bench/quote.mjs';
import { benchThroughput } from './bench/throughput.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const sections = [
  ['quote', 'TPM quote verification', benchQuote],
  ['eventlog', 'UEFI event log parse + replay', benchEventlog],
  ['ima', 'IMA appraisal: full and incremental', benchIma],
  ['agent', 'Agent TPM operations: node-tss addon vs tpm2-tools on one swtpm', benchAgent],
  ['issuance', 'Issuance through PKCS#11', benchIssuance],
  ['attestation', 'Attestation over HTTPS with issuance: SQLite and PostgreSQL, verifier in a child process', benchAttestation],
  ['throughput', 'Full attestations per second with software agents: the verifier as the bottleneck (SQLite; PostgreSQL with one and two verifiers)', benchThroughput],
  ['fleet', 'Fleet size: the routes and RSS of a verifier with 100 and with 100,000 enrolled agents (SQLite)', benchFleet],
];

const { values } = parseArgs({ options: { json: { type: 'boolean', default: false }, only: { type: 'string', multiple: true } } });
const unknown = (values.only ?? []).filter((name) => !sections.some(([id]) => id === name));
if (unknown.length > 0) {
  console.error(`unknown section ${unknown.join(', ')}: one of ${sections.map(([id]) => id).join(', ')}`);
  process.exit(2);
}
// With --json the human report goes to stderr, the one JSON object to stdout.
const say = values.json ? (line) => process.stderr.write(`${line}\n`) : (line) => console.log(line);

const figures = [];
for (const [id, title, run] of sections) {
  if (values.only && !values.only.includes(id)) continue;
  say(`\n== ${title}`);
  for (const row of await run(root)) {
    const ok = row.target === undefined || row.ratio >= row.target;
    say(`${ok ? ' ' : '!'} ${row.line}`);
    figures.push({
      section: id,
      name: row.name,
      value: row.value,
      unit: row.unit,
      ...(row.baseline ? { baseline: row.baseline } : {}),
      ...(row.ratio !== undefined ? { ratio: row.ratio } : {}),
      // Every target is on the ratio (an absolute bound is expressed as bound / value).
      ...(row.target !== undefined ? { target: { ratioAtLeast: row.target }, ok } : {}),
    });
  }
}
const below = figures.filter((f) => f.ok === false);
say(below.length ? `\n${below.length} figure(s) below target: ${below.map((f) => f.name).join('; ')}` : '\nall figures on target');
if (values.json) {
  const machine = { cpus: cpus().length, cpu: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version };
  console.log(JSON.stringify({ machine, figures, belowTarget: below.length }, null, 2));
}
process.exitCode = below.length ? 1 : 0;
