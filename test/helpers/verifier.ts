/**
 * Test harness: the real verifier (startVerifier, real HTTPS on a free port) on a temp data
 * dir, with SQLite or a private schema of the PostgreSQL on 127.0.0.1:5432, and its issuing
 * keys in files or in a SoftHSM token of its own. stop() closes it and removes everything.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig, type Config } from '../../src/config/config.js';
import { loadEkRootStore } from '../../src/cli/root-store.js';
import { startVerifier, type Verifier } from '../../src/server/verifier.js';
import { rootStoreFromPemTexts, type EkRootStore } from '../../src/tpm/ek-roots.js';
import { createTestSchema, dropTestSchema, TEST_PG_URL } from '../store-pg.js';
import { startSoftHsm, type SoftHsm } from './softhsm.js';

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
  /** More tokens to initialise in the SoftHSM (SoftHSM sees only tokens that exist when the process first initialises it). */
  readonly extraTokens?: readonly string[];
  readonly now?: () => number;
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
      const schema = await createTestSchema();
      undo.push(() => dropTestSchema(schema));
      database = `${TEST_PG_URL}?schema=${schema}`;
    }
    let softHsm: SoftHsm | undefined;
    let keys: string | undefined;
    if (opts.keys === 'softhsm') {
      softHsm = await startSoftHsm({ tokenLabel: 'attestor' });
      undo.push(() => softHsm!.stop());
      for (const label of opts.extraTokens ?? []) await softHsm.initToken(label);
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
