/**
 * Test harness: the real verifier (startVerifier, real HTTPS on a free port) on a temp data
 * dir, with SQLite or a private schema of the PostgreSQL on 127.0.0.1:5432, and its issuing
 * keys in files or in a SoftHSM token of its own. stop() closes it and removes everything.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { loadConfig, type Config } from '../../src/config/config.js';
import { loadEkRootStore } from '../../src/cli/root-store.js';
import { startVerifier, type Verifier } from '../../src/server/verifier.js';
import { rootStoreFromPemTexts, type EkRootStore } from '../../src/tpm/ek-roots.js';
import { startSoftHsm, type SoftHsm } from './softhsm.js';

export const POSTGRES_URL = process.env.ATTESTOR_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface TestVerifier {
  readonly verifier: Verifier;
  readonly url: string;
  readonly caFingerprint: string;
  readonly adminToken: string;
  readonly dataDir: string;
  /** The database URL given to the verifier (PostgreSQL runs only). */
  readonly database: string | undefined;
  readonly softHsm: SoftHsm | undefined;
  /** The config it runs with (for starting the CLI on the same state). */
  readonly config: Config;
  stop(): Promise<void>;
}

export interface TestVerifierOptions {
  readonly store?: 'sqlite' | 'postgres';
  readonly keys?: 'file' | 'softhsm';
  /** PEM texts of the EK roots to trust (e.g. a swtpm instance's local CA). */
  readonly ekRootPems?: readonly string[];
  readonly config?: Record<string, unknown>;
  readonly now?: () => number;
}

/** A private schema of the test PostgreSQL, dropped by the returned function. */
export async function privatePostgresSchema(): Promise<{ url: string; schema: string; drop(): Promise<void> }> {
  const schema = `attestor_test_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  try {
    await client.connect();
  } catch (e) {
    throw new Error(`PostgreSQL at ${POSTGRES_URL} is not reachable (${(e as Error).message}): the store and e2e suites need it`);
  }
  await client.query(`CREATE SCHEMA ${schema}`);
  await client.end();
  return {
    url: `${POSTGRES_URL}?schema=${schema}`,
    schema,
    drop: async () => {
      const c = new pg.Client({ connectionString: POSTGRES_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    },
  };
}

export async function startTestVerifier(opts: TestVerifierOptions = {}): Promise<TestVerifier> {
  const dataDir = await mkdtemp(join(tmpdir(), 'attestor-verifier-'));
  const undo: Array<() => Promise<void>> = [() => rm(dataDir, { recursive: true, force: true })];
  const stop = async () => {
    for (const u of undo.reverse()) await u().catch(() => undefined);
    undo.length = 0;
  };
  try {
    let database: string | undefined;
    if (opts.store === 'postgres') {
      const pgSchema = await privatePostgresSchema();
      undo.push(pgSchema.drop);
      database = pgSchema.url;
    }
    let softHsm: SoftHsm | undefined;
    let keys: string | undefined;
    if (opts.keys === 'softhsm') {
      softHsm = await startSoftHsm({ tokenLabel: 'attestor' });
      undo.push(() => softHsm!.stop());
      const pinFile = join(dataDir, 'pin');
      await writeFile(pinFile, `${softHsm.userPin}\n`, { mode: 0o600 });
      keys = `pkcs11:token=attestor?module-path=${softHsm.modulePath}&pin-source=${pinFile}`;
    }
    const config = loadConfig({
      flags: {
        dataDir,
        listen: '127.0.0.1:0',
        ...(database ? { database } : {}),
        ...(keys ? { keys } : {}),
        ...(opts.config ?? {}),
        logLevel: 'silent',
      },
    });
    // Without EK roots given, the vendor roots shipped in fixtures/ek-roots are trusted.
    const ekRoots: EkRootStore = opts.ekRootPems
      ? rootStoreFromPemTexts(opts.ekRootPems.map((pem, i) => ({ name: `root-${i}.pem`, pem })))
      : loadEkRootStore();
    const verifier = await startVerifier({ config, ekRoots, logger: pino({ level: 'silent' }), ...(opts.now ? { now: opts.now } : {}) });
    undo.push(() => verifier.close());
    return {
      verifier,
      url: verifier.url,
      caFingerprint: verifier.caFingerprint,
      adminToken: verifier.adminToken!,
      dataDir,
      database,
      softHsm,
      config,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
