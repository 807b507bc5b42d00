import { AttestorError } from '../errors.js';

/*
 * The schema of both dialects, as ordered versioned SQL. A migration, once released, is never
 * edited: a change is a new version appended to MIGRATIONS. This module imports no application
 * code, so what a version creates cannot change when that code does.
 *
 * Each version is written once over a few column types that differ by dialect. SQLite tables
 * are STRICT (a value of the wrong type is refused, not converted). On PostgreSQL, keys and
 * names compare in the "C" collation, byte by byte as SQLite compares them, so both list
 * pages in the same order.
 */

export type MigrationDialect = 'sqlite' | 'postgres';

interface ColumnTypes {
  /** Ids, names and other text that is compared, ordered or joined on. */
  readonly key: string;
  readonly bytes: string;
  /** Times (ms), sequence numbers, UINT32 counters. */
  readonly int64: string;
  readonly bool: string;
  /** After CREATE TABLE (...). */
  readonly table: string;
  /** For small rows looked up by their text key (challenges): one b-tree, not two, on SQLite. */
  readonly keyedTable: string;
}

const TYPES: { readonly [d in MigrationDialect]: ColumnTypes } = {
  sqlite: { key: 'TEXT', bytes: 'BLOB', int64: 'INTEGER', bool: 'INTEGER', table: ' STRICT', keyedTable: ' STRICT, WITHOUT ROWID' },
  postgres: { key: 'TEXT COLLATE "C"', bytes: 'BYTEA', int64: 'BIGINT', bool: 'BOOLEAN', table: '', keyedTable: '' },
};

export interface Migration {
  readonly version: number;
  readonly description: string;
  readonly statements: (dialect: MigrationDialect) => readonly string[];
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'agents, enrollments, challenges, baselines, verdicts, credentials, keys, tokens, audit chain, IMA progress',
    statements: (dialect) => {
      const t = TYPES[dialect];
      return [
        `CREATE TABLE agents (
          id ${t.key} PRIMARY KEY,
          ek_public ${t.bytes} NOT NULL UNIQUE,
          ak_public ${t.bytes} NOT NULL,
          ek_certificate ${t.bytes},
          labels TEXT NOT NULL,
          status TEXT NOT NULL CHECK (status IN ('active', 'quarantined', 'revoked')),
          created_at ${t.int64} NOT NULL,
          last_clock TEXT,
          last_evidence TEXT,
          last_verdict_id ${t.key},
          last_attested_at ${t.int64}
        )${t.table}`,
        `CREATE TABLE pending_enrollments (
          id ${t.key} PRIMARY KEY,
          agent_id ${t.key} NOT NULL,
          ek_public ${t.bytes} NOT NULL,
          ak_public ${t.bytes} NOT NULL,
          ek_certificate ${t.bytes},
          labels TEXT NOT NULL,
          secret_hash ${t.bytes} NOT NULL,
          created_at ${t.int64} NOT NULL,
          expires_at ${t.int64} NOT NULL
        )${t.table}`,
        'CREATE INDEX pending_enrollments_expiry ON pending_enrollments (expires_at)',
        `CREATE TABLE baselines (
          id ${t.key} PRIMARY KEY,
          name ${t.key} NOT NULL,
          version INTEGER NOT NULL CHECK (version > 0),
          status TEXT NOT NULL CHECK (status IN ('staged', 'enforced', 'retired')),
          document TEXT NOT NULL,
          created_at ${t.int64} NOT NULL,
          created_by TEXT NOT NULL,
          enforced_at ${t.int64},
          retired_at ${t.int64},
          UNIQUE (name, version)
        )${t.table}`,
        "CREATE UNIQUE INDEX baselines_one_enforced ON baselines (name) WHERE status = 'enforced'",
        'CREATE INDEX baselines_by_status ON baselines (status)',
        `CREATE TABLE baseline_versions (
          name ${t.key} PRIMARY KEY,
          latest INTEGER NOT NULL
        )${t.table}`,
        `CREATE TABLE challenges (
          nonce ${t.key} PRIMARY KEY,
          agent_id ${t.key} NOT NULL REFERENCES agents (id),
          created_at ${t.int64} NOT NULL,
          expires_at ${t.int64} NOT NULL,
          baseline_id ${t.key} REFERENCES baselines (id),
          pcr_selection TEXT NOT NULL
        )${t.keyedTable}`,
        'CREATE INDEX challenges_expiry ON challenges (expires_at)',
        `CREATE TABLE verdicts (
          id ${t.key} PRIMARY KEY,
          agent_id ${t.key} NOT NULL REFERENCES agents (id),
          at ${t.int64} NOT NULL,
          status TEXT NOT NULL CHECK (status IN ('affirming', 'warning', 'contraindicated')),
          baseline_id ${t.key} REFERENCES baselines (id),
          baseline_version INTEGER,
          reasons TEXT NOT NULL,
          claims TEXT NOT NULL
        )${t.table}`,
        `CREATE TABLE credentials (
          id ${t.key} PRIMARY KEY,
          kind TEXT NOT NULL CHECK (kind IN ('x509-svid', 'jwt-svid')),
          agent_id ${t.key} NOT NULL REFERENCES agents (id),
          verdict_id ${t.key} NOT NULL REFERENCES verdicts (id),
          issued_at ${t.int64} NOT NULL,
          expires_at ${t.int64} NOT NULL,
          certificate_sha256 TEXT NOT NULL,
          revoked ${t.bool} NOT NULL CHECK (revoked IN (FALSE, TRUE))
        )${t.table}`,
        'CREATE INDEX credentials_by_agent ON credentials (agent_id, issued_at, id)',
        `CREATE TABLE issuing_keys (
          kid ${t.key} PRIMARY KEY,
          name TEXT NOT NULL CHECK (name IN ('x509-ca', 'jwt', 'audit')),
          uri TEXT NOT NULL,
          state TEXT NOT NULL CHECK (state IN ('prepared', 'active', 'old')),
          public_key_spki ${t.bytes} NOT NULL,
          certificate ${t.bytes},
          created_at ${t.int64} NOT NULL,
          not_after ${t.int64}
        )${t.table}`,
        "CREATE UNIQUE INDEX issuing_keys_one_active ON issuing_keys (name) WHERE state = 'active'",
        `CREATE TABLE operator_tokens (
          id ${t.key} PRIMARY KEY,
          hash ${t.key} NOT NULL UNIQUE,
          role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'auditor', 'relying-party')),
          label TEXT NOT NULL,
          created_at ${t.int64} NOT NULL,
          revoked_at ${t.int64},
          first_admin ${t.bool} NOT NULL DEFAULT FALSE CHECK (first_admin IN (FALSE, TRUE))
        )${t.table}`,
        // The admin token made at first start: one, ever, however many replicas start at once.
        'CREATE UNIQUE INDEX operator_tokens_first_admin ON operator_tokens (first_admin) WHERE first_admin = TRUE',
        `CREATE TABLE audit_entries (
          seq ${t.int64} PRIMARY KEY CHECK (seq > 0),
          at ${t.int64} NOT NULL,
          actor TEXT NOT NULL,
          action TEXT NOT NULL,
          subject TEXT NOT NULL,
          details TEXT NOT NULL,
          prev_hash TEXT NOT NULL,
          hash TEXT NOT NULL
        )${t.table}`,
        // The chain's head, locked by every append (src/store/audit.ts).
        `CREATE TABLE audit_head (
          id INTEGER PRIMARY KEY CHECK (id = 1),
          seq ${t.int64} NOT NULL,
          hash TEXT NOT NULL
        )${t.table}`,
        `INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '${'0'.repeat(64)}')`,
        `CREATE TABLE ima_progress (
          agent_id ${t.key} PRIMARY KEY REFERENCES agents (id),
          reset_count ${t.int64} NOT NULL,
          state TEXT NOT NULL
        )${t.table}`,
      ];
    },
  },
  {
    version: 2,
    description: 'revocation time of credentials, for the CRL',
    statements: (dialect) => [
      `ALTER TABLE credentials ADD COLUMN revoked_at ${TYPES[dialect].int64}`,
      'CREATE INDEX credentials_revoked ON credentials (revoked, expires_at)',
    ],
  },
  {
    version: 3,
    description: 'freshness of agents: the last affirming attestation, and since when an agent is stale',
    statements: (dialect) => [
      `ALTER TABLE agents ADD COLUMN last_affirmed_at ${TYPES[dialect].int64}`,
      `ALTER TABLE agents ADD COLUMN stale_at ${TYPES[dialect].int64}`,
      // Agents enrolled before this version are measured from their last credentials, not from their enrollment.
      'UPDATE agents SET last_affirmed_at = (SELECT MAX(c.issued_at) FROM credentials c WHERE c.agent_id = agents.id)',
      // What the freshness watchdog looks for: active agents not yet stale, by their last affirmation.
      "CREATE INDEX agents_freshness ON agents (COALESCE(last_affirmed_at, created_at)) WHERE status = 'active' AND stale_at IS NULL",
    ],
  },
  {
    version: 4,
    description: 'signed checkpoints of the audit chain',
    statements: (dialect) => {
      const t = TYPES[dialect];
      // No foreign key to audit_entries: a checkpoint must outlive a deleted entry, to tell of it.
      return [
        `CREATE TABLE audit_checkpoints (
          seq ${t.int64} PRIMARY KEY CHECK (seq > 0),
          hash TEXT NOT NULL,
          at ${t.int64} NOT NULL,
          kid ${t.key} NOT NULL,
          signature ${t.bytes} NOT NULL
        )${t.table}`,
      ];
    },
  },
  {
    version: 5,
    description: 'key rotation: activation and retirement times, one prepared key per name, the issuing key of each credential, CRLs per CA, the key ring sequence',
    statements: (dialect) => {
      const t = TYPES[dialect];
      return [
        `ALTER TABLE issuing_keys ADD COLUMN activated_at ${t.int64}`,
        `ALTER TABLE issuing_keys ADD COLUMN retired_at ${t.int64}`,
        "UPDATE issuing_keys SET activated_at = created_at WHERE state = 'active'",
        "CREATE UNIQUE INDEX issuing_keys_one_prepared ON issuing_keys (name) WHERE state = 'prepared'",
        // The kid of the key that signed a credential: its CA's for an X509-SVID, the JWT key's
        // for a JWT-SVID. What was issued before is the active key's of its kind.
        `ALTER TABLE credentials ADD COLUMN issuer_kid ${t.key}`,
        `UPDATE credentials SET issuer_kid = (SELECT kid FROM issuing_keys WHERE name = 'x509-ca' AND state = 'active') WHERE kind = 'x509-svid'`,
        `UPDATE credentials SET issuer_kid = (SELECT kid FROM issuing_keys WHERE name = 'jwt' AND state = 'active') WHERE kind = 'jwt-svid'`,
        // A replica still running the previous version (a rolling upgrade on PostgreSQL) cannot
        // record a credential no CRL would list. (SQLite has one process: nothing to refuse.)
        ...(dialect === 'postgres' ? ['ALTER TABLE credentials ALTER COLUMN issuer_kid SET NOT NULL'] : []),
        'CREATE INDEX credentials_by_issuer ON credentials (issuer_kid, expires_at)',
        // The CRL each CA serves, shared by the replicas: its number only grows.
        `CREATE TABLE crls (
          ca_kid ${t.key} PRIMARY KEY,
          number ${t.int64} NOT NULL CHECK (number > 0),
          der ${t.bytes} NOT NULL,
          -- SHA-256 of the revoked serials it lists: another set makes a new CRL.
          serials_sha256 TEXT NOT NULL,
          renew_at ${t.int64} NOT NULL
        )${t.table}`,
        // Bumped by every change of the keys: the SPIFFE bundle's sequence, and what replicas poll.
        `CREATE TABLE key_ring (
          id INTEGER PRIMARY KEY CHECK (id = 1),
          sequence ${t.int64} NOT NULL
        )${t.table}`,
        'INSERT INTO key_ring (id, sequence) VALUES (1, 1)',
      ];
    },
  },
];

/** Created before anything else, and never changed: how a database tells its version. */
export function schemaMigrationsTable(dialect: MigrationDialect): string {
  const t = TYPES[dialect];
  return `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at ${t.int64} NOT NULL)${t.table}`;
}

/**
 * The migrations a database at `current` (its highest applied version, 0 when new) still
 * needs, in order. A database migrated by a newer Attestor is refused: this code does not know
 * its schema and must not write to it.
 */
export function pendingMigrations(current: number): readonly Migration[] {
  const latest = MIGRATIONS[MIGRATIONS.length - 1]!.version;
  if (current > latest) {
    throw new AttestorError(
      'ERR_STORE',
      `the database schema is at version ${current}, newer than this Attestor knows (${latest}): run the Attestor that migrated it, or a newer one`,
    );
  }
  return MIGRATIONS.filter((m) => m.version > current);
}
