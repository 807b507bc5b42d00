import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { JSONWebKeySet } from 'jose';
import type { Logger } from 'pino';
import { keysUri, listenAddress, publicUrl as publicUrlOf, type Config } from '../config/config.js';
import { AttestorError } from '../errors.js';
import { openKeyManager } from '../issuer/open-keys.js';
import type { KeyManager } from '../issuer/signer.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import type { EkRootStore } from '../tpm/ek-roots.js';
import { ProblemError, createApp } from './app.js';
import { createAuditCheckpointer } from './audit-checkpointer.js';
import { tokenHash } from './auth.js';
import { createAttestationFlow } from './flows/attestation.js';
import { createBaselineSelection } from './flows/baseline-selection.js';
import { createEnrollmentFlow } from './flows/enrollment.js';
import { createIntrospection } from './flows/introspection.js';
import { createFreshnessWatchdog } from './freshness-watchdog.js';
import { listenHttps } from './https.js';
import { openKeyRing } from './issuing-keys.js';
import { runEvery } from './periodic.js';
import { createSelfIssuedTls, type ServerTls } from './server-tls.js';
import { createKeyRotation } from './key-rotation.js';
import { createMetrics, watchedGauge } from './metrics.js';
import { openApiDocument } from './openapi.js';
import { createBodyBudget } from './body-budget.js';
import { createAgentRouteLimits } from './rate-limit.js';
import type { Route } from './route.js';
import { agentRoutes } from './routes/agent.js';
import { auditRoutes } from './routes/audit.js';
import { introspectionRoute } from './routes/introspection.js';
import { keyRoutes } from './routes/keys.js';
import { operatorRoutes } from './routes/operator.js';
import { publicRoutes } from './routes/public.js';

/** The API version the OpenAPI document states. */
export const API_VERSION = '1.0.0';

export interface Verifier {
  /** https://host:port where it listens (the public URL unless configured otherwise). */
  readonly url: string;
  readonly port: number;
  /** SHA-256 of the root CA DER, hex: what agents and the CLI pin. */
  readonly caFingerprint: string;
  /** The first admin token, when this start created it (printed once, never stored). */
  readonly adminToken: string | undefined;
  /** True when the issuing keys are software keys (development only). */
  readonly softwareKeys: boolean;
  readonly store: Store;
  readonly routes: readonly Route[];
  close(): Promise<void>;
}

export interface VerifierDeps {
  readonly config: Config;
  readonly ekRoots: EkRootStore;
  readonly logger: Logger;
  readonly now?: () => number;
}

/** How often expired challenges and pending enrollments are removed. */
const PURGE_INTERVAL_MS = 60_000;
/** How often the keys table is read for changes, and rotation steps that are due are taken. */
const KEY_ROUND_MS = 1000;

/**
 * Starts the verifier: store, keys, credential authority, first admin token, routes, HTTPS.
 * Everything it opened is closed again if a later step fails.
 */
export async function startVerifier(deps: VerifierDeps): Promise<Verifier> {
  const { config, logger } = deps;
  const now = deps.now ?? Date.now;
  const cleanup: Array<() => Promise<void>> = [];
  const closeAll = async () => {
    for (const c of cleanup.reverse()) await c().catch((e: unknown) => logger.error({ err: e }, 'error while closing'));
  };
  try {
    const store = await openStore({ dataDir: config.dataDir, ...(config.database ? { database: config.database } : {}), thread: true });
    cleanup.push(() => store.close());
    const keys: KeyManager = await openKeyManager(keysUri(config));
    cleanup.push(() => keys.close());
    if (keys.software) {
      logger.warn('SOFTWARE ISSUING KEYS: the CA, JWT and audit keys are files, not in an HSM. For development only; use --keys pkcs11:... in production.');
    }
    // Stopped once the listener has closed (cleanup runs in reverse): the shutdown checkpoint covers the last request.
    const checkpointer = createAuditCheckpointer({ store, keys, every: config.audit.checkpointEvery, intervalMs: config.audit.checkpointSeconds * 1000, now, logger });
    cleanup.push(() => checkpointer.stop());
    const { host, port } = listenAddress(config);
    // With port 0 the public URL is only known once listening; JWT issuer and CRL URL need it first.
    const listening = await listenHttps({ host, port, limits: config.limits });
    cleanup.push(() => listening.close());
    const publicUrl = publicUrlOf(config, listening.port);
    const authority = await openKeyRing({ store, keys, trustDomain: config.trustDomain, publicUrl, caLifetimeDays: config.ca.lifetimeDays, now, logger });
    const rotation = createKeyRotation({
      store,
      keys,
      ring: authority,
      trustDomain: config.trustDomain,
      caLifetimeDays: config.ca.lifetimeDays,
      activationDelaySeconds: config.keyRotation.activationDelaySeconds,
      caRotateBeforeDays: config.ca.rotateBeforeDays,
      now,
      logger,
    });
    const adminToken = await firstAdminToken(store, now());
    const metrics = createMetrics();

    const enrollment = createEnrollmentFlow({
      store,
      ekRoots: deps.ekRoots,
      registeredEkHashes: new Set(config.registeredEkHashes),
      trustDomain: config.trustDomain,
      enrollmentTtlSeconds: config.attestation.enrollmentTtlSeconds,
      allowSha1: config.attestation.allowSha1,
      now,
      metrics,
    });
    const baselinesInForce = createBaselineSelection(store);
    // Rules tightened since a baseline was stored: say so now, not at the first refusal.
    await baselinesInForce().then(
      ({ unusable }) => {
        for (const { id, version, problem } of unusable) {
          logger.error({ baseline: id, version, problem }, 'a baseline in force no longer validates: the agents it selects are refused (ERR_BASELINE_UNUSABLE) until it is retired or replaced');
        }
      },
      (e: unknown) => logger.warn({ err: e }, 'the baselines in force could not be checked at start'),
    );
    const attestation = createAttestationFlow({
      store,
      authority,
      baselinesInForce,
      trustDomain: config.trustDomain,
      ttl: config.attestation,
      allowSha1: config.attestation.allowSha1,
      quarantineOnFailure: config.attestation.quarantineOnFailure,
      now,
      refusal: (code, message, verdict) => new ProblemError(code, message, { verdict }),
      metrics,
    });
    const routes: Route[] = [];
    routes.push(
      ...agentRoutes({
        enrollment,
        attestation,
        trustDomain: config.trustDomain,
        limits: createAgentRouteLimits(config.limits, now),
      }),
      ...operatorRoutes({ store, trustDomain: config.trustDomain, now }),
      ...auditRoutes({ store }),
      ...keyRoutes({ ring: authority, rotation }),
      introspectionRoute(createIntrospection({ store, jwks: () => authority.jwks as JSONWebKeySet, issuer: publicUrl, now })),
      ...publicRoutes({ store, authority, metrics, publicUrl, now, openapi: () => openApiDocument(routes, { version: API_VERSION, serverUrl: publicUrl }) }),
    );
    const bodyBudget = createBodyBudget({ total: config.limits.bodyBytesInFlight, perNetwork: config.limits.bodyBytesInFlightPerAddress });
    watchedGauge(metrics.registry, 'attestor_request_body_bytes_in_flight', 'Request-body bytes reserved now (limits.bodyBytesInFlight)', () => bodyBudget.held);
    const app = createApp({ store, routes, logger, metrics, limits: config.limits, bodyBudget });
    if (config.tls) {
      listening.serve(app, { key: readTlsFile(config.tls.key, 'tls.key'), cert: readTlsFile(config.tls.cert, 'tls.cert') });
    } else {
      // Served from the first certificate on; later ones (a CA rotation, renewal) replace it in place.
      let install = (tls: ServerTls) => listening.serve(app, tls);
      const serverTls = createSelfIssuedTls({
        ring: authority,
        names: ['localhost', '127.0.0.1', '::1', ...(host === '0.0.0.0' || host === '::' ? [] : [host]), new URL(publicUrl).hostname.replace(/^\[|\]$/g, ''), ...config.serverNames],
        now,
        install: (tls) => install(tls),
        logger,
      });
      await serverTls.refresh();
      install = (tls) => listening.server.setSecureContext(tls);
      cleanup.push(runEvery(KEY_ROUND_MS, () => serverTls.refresh(), (e) => logger.error({ err: e }, 'issuing the TLS certificate again failed')));
    }

    const purge = setInterval(() => {
      const t = now();
      Promise.all([store.challenges.purgeExpired(t), store.enrollments.purgeExpired(t)]).catch((e: unknown) => logger.error({ err: e }, 'purge of expired challenges failed'));
    }, PURGE_INTERVAL_MS);
    purge.unref();
    cleanup.push(async () => clearInterval(purge));
    const watchdog = createFreshnessWatchdog({ store, freshnessSeconds: config.attestation.freshnessSeconds, now, metrics, logger });
    cleanup.push(watchdog.start(config.attestation.watchdogSeconds * 1000));
    checkpointer.start();
    // Also how each replica learns of another's rotation: the keys table is polled at every round.
    cleanup.push(rotation.start(KEY_ROUND_MS));

    logger.info({ url: publicUrl, caFingerprint: authority.caFingerprint, database: store.dialect }, 'verifier listening');
    return {
      url: publicUrl,
      port: listening.port,
      caFingerprint: authority.caFingerprint,
      adminToken,
      softwareKeys: keys.software,
      store,
      routes,
      close: closeAll,
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}

/** Creates the first admin token unless one exists (several replicas starting at once create one). */
async function firstAdminToken(store: Store, now: number): Promise<string | undefined> {
  const token = randomBytes(32).toString('base64url');
  const created = await store.tokens.createFirstAdmin(
    { id: randomUUID(), hash: tokenHash(token), role: 'admin', label: 'first admin', createdAt: now, revokedAt: null },
    { actor: 'system', action: 'token.create', subject: 'first-admin', details: { role: 'admin' } },
  );
  return created ? token : undefined;
}

function readTlsFile(path: string, key: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new AttestorError('ERR_CONFIG', `configuration key "${key}": cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
}
