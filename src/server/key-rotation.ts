import type { Logger } from 'pino';
import { kidOf } from '../issuer/jwks.js';
import type { KeyManager, KeyRole } from '../issuer/signer.js';
import type { IssuingKey, Store } from '../store/store.js';
import { caCertificateFor, recordOf, type KeyRing } from './issuing-keys.js';
import { runEvery } from './periodic.js';

/*
 * Key rotation as SPIRE does it (SERVICE.md "Keys"): a new key is prepared and published
 * (bundle, JWKS, /v1/ca.pem) before it signs; once it has been published for the activation
 * delay (relying parties refetched) it becomes active and the active key old; an old key stays
 * published until the last credential it signed has expired, then it is pruned. Every replica
 * runs the same timer: the store makes each step happen once, whoever is first.
 *
 * A new CA is a new self-signed root of the same trust domain and subject (no cross-signing):
 * relying parties trust it because the bundle carries it before it signs.
 */

export interface KeyRotationDeps {
  readonly store: Store;
  readonly keys: KeyManager;
  readonly ring: KeyRing;
  readonly trustDomain: string;
  readonly caLifetimeDays: number;
  /** How long a prepared key is published before it may sign. */
  readonly activationDelaySeconds: number;
  /** Prepare a new CA this long before the active one expires; absent: at 1/6 of its lifetime left. */
  readonly caRotateBeforeDays: number | undefined;
  readonly now: () => number;
  readonly logger: Pick<Logger, 'info' | 'warn' | 'error'>;
}

export interface KeyRotation {
  /**
   * `POST /v1/keys/rotate`: prepares a key for `role` unless one is prepared, and promotes the
   * prepared key once it has been published for the activation delay, or at once with
   * `immediately`. Returns the role's keys after it.
   */
  rotate(role: KeyRole, immediately: boolean, actor: string): Promise<readonly IssuingKey[]>;
  /** One round of the timer: promotions that are due, a new CA when the active one nears its end, pruning. */
  tick(): Promise<void>;
  /** Runs `tick` every `intervalMs` (skipping a tick while one runs) until the returned stop, which awaits it. */
  start(intervalMs: number): () => Promise<void>;
}

/** An old key is pruned this long after its retirement at the earliest: a credential signed just before it may still be on its way to the store. */
const PRUNE_GRACE_MS = 10 * 60_000;
/** Pruning is a write transaction: tried this often at most. */
const PRUNE_EVERY_MS = 60_000;

export function createKeyRotation(deps: KeyRotationDeps): KeyRotation {
  const delayMs = deps.activationDelaySeconds * 1000;

  /** Prepares a successor of the active key of `role` unless one is prepared; the role's keys after. */
  const prepare = async (role: KeyRole, active: IssuingKey, actor: string): Promise<readonly IssuingKey[]> => {
    const signer = await deps.keys.generate(role);
    const certificate = role === 'x509-ca' ? await caCertificateFor(deps, signer) : null;
    const key = recordOf(role, signer, certificate, await kidOf(signer.publicKey), deps.now());
    const after = await deps.store.keys.prepare(key, active.kid, {
      actor,
      action: 'key.prepare',
      subject: role,
      details: { kid: key.kid, uri: key.uri, software: signer.software },
    });
    if (!after.some((k) => k.kid === key.kid)) deps.logger.info({ key: role, uri: key.uri }, 'another rotation prepared a key first; the key generated here is not used');
    return after;
  };

  const promote = async (role: KeyRole, active: IssuingKey, actor: string) => {
    const after = await deps.store.keys.promote(role, active.kid, deps.now(), actor);
    const now = after.find((k) => k.state === 'active')!;
    if (now.kid !== active.kid) deps.logger.info({ key: role, kid: now.kid }, 'key rotated: the prepared key is active');
    return after;
  };

  const due = (prepared: IssuingKey, now: number) => prepared.createdAt + delayMs <= now;
  const caDue = (ca: IssuingKey, now: number) => {
    const notAfter = ca.notAfter!;
    const before = deps.caRotateBeforeDays === undefined ? (notAfter - ca.createdAt) / 6 : deps.caRotateBeforeDays * 86_400_000;
    return now >= notAfter - before;
  };

  let lastPrune = 0;
  const tick = async () => {
    await deps.ring.refresh();
    const now = deps.now();
    const keys = deps.ring.keys();
    let changed = false;
    for (const role of ['x509-ca', 'jwt', 'audit'] as const) {
      const active = keys.find((k) => k.name === role && k.state === 'active')!;
      const prepared = keys.find((k) => k.name === role && k.state === 'prepared');
      if (prepared && due(prepared, now)) {
        await promote(role, active, 'system');
        changed = true;
      } else if (!prepared && role === 'x509-ca' && caDue(active, now)) {
        await prepare(role, active, 'system');
        deps.logger.info({ key: role, notAfter: new Date(active.notAfter!).toISOString() }, 'the CA nears its end: a new CA is prepared');
        changed = true;
      }
    }
    const prunable = keys.some((k) => k.state === 'old' && k.name !== 'audit' && k.retiredAt! < now - PRUNE_GRACE_MS);
    if (prunable && now - lastPrune >= PRUNE_EVERY_MS) {
      lastPrune = now;
      const pruned = await deps.store.keys.prune(now, now - PRUNE_GRACE_MS);
      for (const k of pruned) deps.logger.info({ key: k.name, kid: k.kid }, 'old key pruned: the last credential it signed has expired');
      changed ||= pruned.length > 0;
    }
    if (changed) await deps.ring.refresh();
  };

  return {
    async rotate(role, immediately, actor) {
      await deps.ring.refresh();
      const before = await deps.store.keys.list(role);
      const active = before.find((k) => k.state === 'active')!;
      let keys = before.some((k) => k.state === 'prepared') ? before : await prepare(role, active, actor);
      const prepared = keys.find((k) => k.state === 'prepared');
      if (prepared && (immediately || due(prepared, deps.now()))) keys = await promote(role, active, actor);
      await deps.ring.refresh();
      return keys;
    },
    tick,
    start: (intervalMs) => runEvery(intervalMs, tick, (e) => deps.logger.error({ err: e }, 'key rotation round failed')),
  };
}
