import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { AttestorError } from '../errors.js';

/*
 * The verifier's configuration: a JSON file (--config), then ATTESTOR_* environment variables,
 * then command-line flags, each overriding the one before. One zod schema checks the result
 * once at start: unknown keys are refused and every error names its key, so a typo never
 * silently falls back to a default.
 */

const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
const LISTEN = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/;

const seconds = (max: number) => z.number().int().positive().max(max);

export const ConfigSchema = z.strictObject({
  /** Where the SQLite database, the development keys and the TLS key live. */
  dataDir: z.string().min(1),
  /** postgres://user@host:port/db for PostgreSQL; absent: SQLite in the data dir. */
  database: z.string().min(1).optional(),
  /** host:port to listen on. */
  listen: z.string().regex(LISTEN, 'must be host:port, e.g. 127.0.0.1:8443 or [::]:8443').default('127.0.0.1:8443'),
  /** The URL agents and relying parties reach the verifier at: the JWT issuer, JWKS and CRL URLs derive from it. */
  publicUrl: z.url({ protocol: /^https$/ }).optional(),
  /** SPIFFE trust domain (lowercase letters, digits, '.', '-', '_'). */
  trustDomain: z.string().regex(TRUST_DOMAIN, 'must be lowercase [a-z0-9._-] (SPIFFE-ID.md)').default('attestor.internal'),
  /** Directory of PEM EK root and intermediate CA certificates; absent: the vendor roots shipped with Attestor. */
  ekRoots: z.string().min(1).optional(),
  /** Agent ids (SHA-256 of the EK public key, hex) of TPMs without an EK certificate that may enroll. */
  registeredEkHashes: z.array(z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits')).max(100_000).default([]),
  /** Where the issuing keys live: pkcs11:token=...?module-path=...&pin-source=... or file:DIR (development). */
  keys: z.string().min(1).optional(),
  /** Extra DNS names and IP addresses of the verifier's own TLS certificate. */
  serverNames: z.array(z.string().min(1).max(253)).max(32).default([]),
  /** A TLS certificate and key to serve instead of one issued by the verifier's own CA. */
  tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
  attestation: z
    .strictObject({
      /** How long an attestation vouches for a host: no credential outlives it. */
      freshnessSeconds: seconds(7 * 86400).default(3600),
      nonceTtlSeconds: seconds(600).default(60),
      enrollmentTtlSeconds: seconds(3600).default(300),
      x509TtlSeconds: seconds(7 * 86400).default(3600),
      jwtTtlSeconds: seconds(86400).default(300),
      /** Accept legacy SHA-1 AKs and signatures (old fleets only). */
      allowSha1: z.boolean().default(false),
      /** Quarantine an agent whose authentic evidence an enforced baseline refuses (SERVICE.md). */
      quarantineOnFailure: z.boolean().default(true),
      /** How often the freshness watchdog looks for agents without credentials issued within freshnessSeconds. */
      watchdogSeconds: seconds(3600).default(30),
    })
    .prefault({}),
  ca: z
    .strictObject({
      lifetimeDays: z.number().int().positive().max(36500).default(1825),
      /** Prepare the next CA this many days before the active one expires; absent: when 1/6 of its lifetime is left. */
      rotateBeforeDays: z.number().int().positive().max(36500).optional(),
    })
    // A CA due for rotation as soon as it is active would be replaced again and again.
    .refine((ca) => ca.rotateBeforeDays === undefined || ca.rotateBeforeDays * 2 <= ca.lifetimeDays, {
      path: ['rotateBeforeDays'],
      message: 'must be at most half of ca.lifetimeDays',
    })
    .prefault({}),
  keyRotation: z
    .strictObject({
      /** How long a prepared key is published (bundle, JWKS) before it signs: relying parties refetch meanwhile. */
      activationDelaySeconds: z.number().int().nonnegative().max(30 * 86400).default(3600),
    })
    .prefault({}),
  limits: z
    .strictObject({
      /** Largest body of an attestation (event log and IMA list included). */
      attestationBodyBytes: z.number().int().positive().max(64 * 1024 * 1024).default(12 * 1024 * 1024),
      /** Largest body of any other route. */
      bodyBytes: z.number().int().positive().max(16 * 1024 * 1024).default(256 * 1024),
      /** Request-body bytes taken on at once (declared lengths, reserved before a body is read), in all... */
      bodyBytesInFlight: z.number().int().positive().default(128 * 1024 * 1024),
      /** ...and from one client address (its network, as for connections). */
      bodyBytesInFlightPerAddress: z.number().int().positive().default(32 * 1024 * 1024),
      headersTimeoutMs: z.number().int().positive().default(10_000),
      requestTimeoutMs: z.number().int().positive().default(30_000),
      keepAliveTimeoutMs: z.number().int().positive().default(5_000),
      /** Enrollment and activation attempts per client address and minute. */
      enrollmentsPerMinute: z.number().int().positive().default(60),
      /** Challenges, and attestations, per client address and minute (each is a durable write; an agent needs one per attestation). */
      challengesPerMinute: z.number().int().positive().default(600),
      /** Enrollments, challenges and attestations for one agent from one client address a minute (each counted apart): no one else can spend a host's budget. */
      agentRequestsPerMinute: z.number().int().positive().default(60),
      /** Open connections per client address: one address cannot take every slot. */
      connectionsPerAddress: z.number().int().positive().default(256),
      maxConnections: z.number().int().positive().default(10_000),
    })
    // Node's listener refuses to start otherwise: say so here, naming the key.
    .refine((l) => l.headersTimeoutMs <= l.requestTimeoutMs, { path: ['headersTimeoutMs'], message: 'must not exceed limits.requestTimeoutMs' })
    // Otherwise a body a route takes could never be admitted.
    .refine((l) => Math.max(l.attestationBodyBytes, l.bodyBytes) <= l.bodyBytesInFlightPerAddress, {
      path: ['bodyBytesInFlightPerAddress'],
      message: 'must be at least limits.attestationBodyBytes and limits.bodyBytes',
    })
    .refine((l) => l.bodyBytesInFlightPerAddress <= l.bodyBytesInFlight, { path: ['bodyBytesInFlightPerAddress'], message: 'must not exceed limits.bodyBytesInFlight' })
    .prefault({}),
  audit: z
    .strictObject({
      /** Sign a checkpoint of the audit chain once this many entries were appended since the last one... */
      checkpointEvery: z.number().int().positive().max(1_000_000).default(1000),
      /** ...or this long after the last one, if the chain moved since (and at every clean shutdown). */
      checkpointSeconds: seconds(86400).default(300),
    })
    .prefault({}),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = z.output<typeof ConfigSchema>;

/** The environment variables read, and the config key each sets. */
const ENV_KEYS: ReadonlyArray<[string, keyof Config]> = [
  ['ATTESTOR_DATA_DIR', 'dataDir'],
  ['ATTESTOR_DATABASE', 'database'],
  ['ATTESTOR_LISTEN', 'listen'],
  ['ATTESTOR_PUBLIC_URL', 'publicUrl'],
  ['ATTESTOR_TRUST_DOMAIN', 'trustDomain'],
  ['ATTESTOR_EK_ROOTS', 'ekRoots'],
  ['ATTESTOR_KEYS', 'keys'],
  ['ATTESTOR_LOG_LEVEL', 'logLevel'],
];

export interface ConfigSources {
  /** Path of a JSON config file. */
  readonly file?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Values given as flags (only those given). */
  readonly flags?: Partial<Record<keyof Config, unknown>>;
}

/** Reads and checks the configuration; ERR_CONFIG names the key (or file) at fault. */
export function loadConfig(sources: ConfigSources): Config {
  let fromFile: Record<string, unknown> = {};
  if (sources.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(sources.file, 'utf8');
    } catch (e) {
      throw new AttestorError('ERR_CONFIG', `cannot read the config file ${sources.file}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
    }
    try {
      fromFile = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new AttestorError('ERR_CONFIG', `the config file ${sources.file} is not valid JSON`);
    }
    if (fromFile === null || typeof fromFile !== 'object' || Array.isArray(fromFile)) {
      throw new AttestorError('ERR_CONFIG', `the config file ${sources.file} must hold a JSON object`);
    }
  }
  const fromEnv: Record<string, unknown> = {};
  for (const [name, key] of ENV_KEYS) {
    const value = sources.env?.[name];
    if (value !== undefined && value !== '') fromEnv[key] = value;
  }
  const flags = Object.fromEntries(Object.entries(sources.flags ?? {}).filter(([, v]) => v !== undefined));
  const parsed = ConfigSchema.safeParse({ ...fromFile, ...fromEnv, ...flags });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
    throw new AttestorError('ERR_CONFIG', `configuration key "${key}": ${issue.message}`);
  }
  return parsed.data;
}

/** The defaults that depend on other keys: keys in the data dir, the public URL from the listen address. */
export function keysUri(config: Config): string {
  return config.keys ?? `file:${join(config.dataDir, 'keys')}`;
}

export function listenAddress(config: Config): { host: string; port: number } {
  const m = LISTEN.exec(config.listen)!;
  const host = m[1]!.replace(/^\[|\]$/g, '');
  const port = Number(m[2]);
  if (port > 65535) throw new AttestorError('ERR_CONFIG', `configuration key "listen": port ${port} is out of range`);
  return { host, port };
}

export function publicUrl(config: Config, boundPort?: number): string {
  if (config.publicUrl) return config.publicUrl.replace(/\/+$/, '');
  const { host, port } = listenAddress(config);
  const shown = host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  return `https://${shown}:${boundPort ?? port}`;
}
