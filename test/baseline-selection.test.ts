/**
 * Baseline selection over a real SQLite store: documents stored before a rule was tightened
 * (a kernelCmdlines rule without bootComponents, stored by an earlier verifier) fail closed for
 * the agents they select, with their own code, and leave the rest of the fleet served.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBaselineSelection } from '../src/server/flows/baseline-selection.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import type { Json, Store } from '../src/store/store.js';
import { codeOf } from './helpers/code-of.js';

const PCRS = { sha256: { '0': ['00'.repeat(32)] } };
/** Valid when it was stored; refused by today's rules. */
const CMDLINE_ONLY = { kernelCmdlines: ['ro quiet'] };

let root: string;
let store: Store;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'attestor-baseline-selection-'));
  store = await openSqliteStore({ path: join(root, 'attestor.db') });
});
afterAll(async () => {
  await store?.close();
  await rm(root, { recursive: true, force: true });
});

/** A baseline stored as it is (the store does not validate documents), then enforced or left staged. */
async function stored(document: Json, status: 'enforced' | 'staged' = 'enforced'): Promise<string> {
  const id = randomUUID();
  const audit = { actor: 'test', action: 'baseline.create', subject: id, details: {} };
  await store.baselines.create({ id, name: id, status: 'staged', document, createdAt: Date.now(), createdBy: 'test' }, audit);
  if (status === 'enforced') await store.baselines.setStatus(id, 'enforced', Date.now(), { ...audit, action: 'baseline.enforce' });
  return id;
}

async function retireAll(): Promise<void> {
  for (const b of await store.baselines.inForce()) await store.baselines.setStatus(b.id, 'retired', Date.now(), { actor: 'test', action: 'baseline.retire', subject: b.id, details: {} });
}

describe('a stored baseline that no longer validates', () => {
  it('fails closed, ERR_BASELINE_UNUSABLE naming it, for the agents it selects only; a staged one is left out', async () => {
    await retireAll();
    const web = await stored({ version: 1, selector: { labels: { role: 'web' } }, eventlog: CMDLINE_ONLY });
    const db = await stored({ version: 1, selector: { labels: { role: 'db' } }, pcrs: PCRS });
    const fleet = await stored({ version: 1, pcrs: PCRS });
    await stored({ version: 1, eventlog: CMDLINE_ONLY }, 'staged');
    const select = await createBaselineSelection(store)();
    expect(codeOf(() => select({ role: 'web' }))).toBe('ERR_BASELINE_UNUSABLE');
    expect(() => select({ role: 'web' })).toThrow(web);
    expect(select({ role: 'db' })).toMatchObject({ enforced: { id: db }, staged: [] });
    expect(select({})).toMatchObject({ enforced: { id: fleet }, staged: [] });
    // What the verifier logs at start: both unusable ones, the staged one too.
    expect(select.unusable.map((u) => u.id)).toContain(web);
    expect(select.unusable).toHaveLength(2);
    expect(select.unusable[0]!.problem).toContain('kernelCmdlines need bootComponents');
  });

  it('one more specific than it still applies; when its selector cannot be read, it fails every agent', async () => {
    await retireAll();
    await stored({ version: 1, selector: { labels: { role: 'web' } }, eventlog: CMDLINE_ONLY });
    const narrower = await stored({ version: 1, selector: { labels: { role: 'web', zone: 'a' } }, pcrs: PCRS });
    expect((await createBaselineSelection(store)())({ role: 'web', zone: 'a' }).enforced?.id).toBe(narrower);
    await stored({ version: 1, selector: { labels: { Role: 'x' } }, pcrs: PCRS });
    const select = await createBaselineSelection(store)();
    for (const labels of [{}, { role: 'web', zone: 'a' }] as { [key: string]: string }[]) expect(codeOf(() => select(labels))).toBe('ERR_BASELINE_UNUSABLE');
  });
});
