import type { Logger } from 'pino';
import type { Store } from '../store/store.js';
import type { Metrics } from './metrics.js';
import { runEvery } from './periodic.js';

/*
 * The freshness watchdog (issue: Keylime verifiers that stop polling without anyone noticing):
 * an active agent that got no credentials within the attestation freshness window is marked
 * stale, audited and counted; its tokens introspect inactive until an attestation issues it
 * credentials again. Every replica runs it: the store marks each agent once, whoever is first.
 */

export interface FreshnessWatchdogDeps {
  readonly store: Store;
  readonly freshnessSeconds: number;
  readonly now: () => number;
  readonly metrics: Metrics;
  readonly logger: Logger;
}

/** Agents marked per transaction: bounds how long one sweep holds the audit chain's head. */
const BATCH = 500;

export interface FreshnessWatchdog {
  /** Marks every agent stale that is due now; the number marked. */
  sweep(): Promise<number>;
  /** Sweeps every `intervalMs` (skipping a tick while one still runs) until the returned stop, which awaits it. */
  start(intervalMs: number): () => Promise<void>;
}

export function createFreshnessWatchdog(deps: FreshnessWatchdogDeps): FreshnessWatchdog {
  const sweep = async (): Promise<number> => {
    let total = 0;
    for (;;) {
      const now = deps.now();
      const marked = await deps.store.agents.markStale(now - deps.freshnessSeconds * 1000, now, BATCH);
      total += marked.length;
      deps.metrics.staleAgents.inc(marked.length);
      for (const id of marked) deps.logger.warn({ agentId: id }, 'agent is stale: no credentials issued within the freshness window');
      // Until a batch marks none: on PostgreSQL a batch may come back short because a replica
      // or an attestation took some of its rows, with more agents still due.
      if (marked.length === 0) return total;
    }
  };
  return {
    sweep,
    start: (intervalMs) => runEvery(intervalMs, sweep, (e) => deps.logger.error({ err: e }, 'freshness watchdog sweep failed')),
  };
}
