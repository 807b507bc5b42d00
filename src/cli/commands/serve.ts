import { Command } from 'commander';
import { pino } from 'pino';
import { loadConfig, publicUrl, type Config } from '../../config/config.js';
import { startVerifier } from '../../server/verifier.js';
import type { CliIo } from '../io.js';
import { loadEkRootStore } from '../root-store.js';

/** The flags of `attestor serve` and the config keys they set. */
interface ServeOptions {
  dataDir?: string;
  database?: string;
  listen?: string;
  trustDomain?: string;
  ekRoots?: string;
  keys?: string;
  publicUrl?: string;
  config?: string;
  logLevel?: string;
}

/**
 * `attestor serve`: runs the verifier until SIGINT or SIGTERM. The first start prints the root
 * CA fingerprint and the first admin token (shown once: only its hash is stored). Logs go to
 * stderr as JSON lines; stdout carries only what a person reads at start.
 */
export function serveCommand(io: CliIo, signals: { wait(): Promise<void> } = processSignals()): Command {
  return new Command('serve')
    .description('run the verifier (HTTPS)')
    .option('--data-dir <dir>', 'where the SQLite database, development keys and state live (or ATTESTOR_DATA_DIR)')
    .option('--database <url>', 'postgres://user@host:port/db to share state between replicas; default SQLite in the data dir')
    .option('--listen <host:port>', 'address to listen on (default 127.0.0.1:8443)')
    .option('--trust-domain <td>', 'SPIFFE trust domain (default attestor.internal)')
    .option('--ek-roots <dir>', 'directory of PEM EK root and intermediate CA certificates (default: the vendor roots shipped)')
    .option('--keys <uri>', 'where the issuing keys live: pkcs11:token=...?module-path=...&pin-source=FILE, or file:DIR (development)')
    .option('--public-url <url>', 'https URL agents and relying parties reach this verifier at')
    .option('--config <file>', 'JSON config file (flags and ATTESTOR_* variables override it)')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent')
    .action(async (opts: ServeOptions) => {
      const config: Config = loadConfig({
        ...(opts.config ? { file: opts.config } : {}),
        env: process.env,
        flags: {
          dataDir: opts.dataDir,
          database: opts.database,
          listen: opts.listen,
          trustDomain: opts.trustDomain,
          ekRoots: opts.ekRoots,
          keys: opts.keys,
          publicUrl: opts.publicUrl,
          logLevel: opts.logLevel,
        },
      });
      const logger = pino({ level: config.logLevel, base: { service: 'attestor' }, redact: ['req.headers.authorization'] }, pino.destination(2));
      const verifier = await startVerifier({ config, ekRoots: loadEkRootStore(config.ekRoots), logger });
      // Where it listens, which behind a proxy or a NAT is not the URL clients are given.
      io.out(`Attestor verifier listening on ${publicUrl({ ...config, publicUrl: undefined }, verifier.port)} (${verifier.store.dialect})\n`);
      if (config.publicUrl) io.out(`Public URL: ${verifier.url}\n`);
      io.out(`Root CA fingerprint: ${verifier.caFingerprint}\n`);
      if (verifier.softwareKeys) io.out('WARNING: software issuing keys (file:): for development only\n');
      if (verifier.adminToken) {
        io.out(`First admin token (shown once, store it safely): ${verifier.adminToken}\n`);
      }
      await signals.wait();
      io.out('stopping\n');
      await verifier.close();
    });
}

function processSignals() {
  return {
    wait: () =>
      new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      }),
  };
}
