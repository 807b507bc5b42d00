// `npm run bench`: every figure is a ratio against a baseline measured in the same run.
import { fileURLToPath } from 'node:url';
import { benchAgent } from './bench/agent.mjs';
import { benchAttestation } from './bench/attestation.mjs';
import { benchEventlog } from './bench/eventlog.mjs';
import { benchIma } from './bench/ima.mjs';
import { benchIssuance } from './bench/issuance.mjs';
import { benchQuote } from './bench/quote.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const sections = [
  ['TPM quote verification', benchQuote],
  ['UEFI event log parse + replay', benchEventlog],
  ['IMA appraisal: full and incremental', benchIma],
  ['Agent TPM operations: node-tss addon vs tpm2-tools on one swtpm', benchAgent],
  ['Issuance through PKCS#11', benchIssuance],
  ['Attestation over HTTPS with issuance: SQLite and PostgreSQL, verifier in a child process', benchAttestation],
];

let failed = 0;
for (const [title, run] of sections) {
  console.log(`\n== ${title}`);
  for (const row of await run(root)) {
    const ok = row.target === undefined || row.ratio >= row.target;
    if (!ok) failed++;
    console.log(`${ok ? ' ' : '!'} ${row.line}`);
  }
}
console.log(failed ? `\n${failed} figure(s) below target` : '\nall figures on target');
process.exitCode = failed ? 1 : 0;
