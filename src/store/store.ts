/**
 * The one storage interface of the verifier, split by entity. Every method is one transaction
 * (or one statement) inside the implementation: callers never open transactions, so a state
 * change and its audit entry always commit together. Times are milliseconds since the epoch.
 * Two implementations: SQLite (src/store/sqlite.ts, the embedded default) and PostgreSQL
 * (src/store/postgres.ts, for several verifier replicas); test/store-conformance.ts runs the
 * same suite against both.
 */

export type AgentStatus = 'active' | 'quarantined' | 'revoked';
export type BaselineStatus = 'staged' | 'enforced' | 'retired';
export type VerdictStatus = 'affirming' | 'warning' | 'contraindicated';
export type Role = 'admin' | 'operator' | 'auditor' | 'relying-party';
export type CredentialKind = 'x509-svid' | 'jwt-svid';
export type KeyName = 'x509-ca' | 'jwt' | 'audit';
export type KeyState = 'prepared' | 'active' | 'old';

/** JSON values as stored (labels, documents, reasons, claims). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** TPMS_CLOCK_INFO of the last accepted quote; clock as a decimal string (it is a UINT64). */
export interface StoredClock {
  readonly clock: string;
  readonly resetCount: number;
  readonly restartCount: number;
  readonly safe: boolean;
}

/** An entry of the audit chain to append in the same transaction as the change it records. */
export interface AuditInput {
  /** `token:<id>`, `agent:<id>` or `system`. */
  readonly actor: string;
  /** `enrollment.create`, `agent.activate`, `attestation.verdict`, `credential.issue`, ... */
  readonly action: string;
  /** What the action is about: an agent id, baseline id, token id, key name. */
  readonly subject: string;
  /** Never a secret. */
  readonly details: { readonly [key: string]: Json };
}

export interface AuditEntry extends AuditInput {
  readonly seq: number;
  readonly at: number;
  /** Lowercase hex SHA-256 of the previous entry (64 zeros for the first). */
  readonly prevHash: string;
  /** Lowercase hex SHA-256(prevHash bytes || canonical JSON of {seq, at, actor, action, subject, details}). */
  readonly hash: string;
}

/** The audit key's signed statement that the chain's entry `seq` has `hash` (src/audit/checkpoint.ts). */
export interface AuditCheckpoint {
  readonly seq: number;
  readonly hash: string;
  /** When it was signed. */
  readonly at: number;
  /** The kid (keys table) of the audit key that signed it. */
  readonly kid: string;
  /** ECDSA P-256 with SHA-256 over the checkpoint's bytes: raw r||s. */
  readonly signature: Uint8Array;
}

export interface PendingEnrollment {
  readonly id: string;
  readonly agentId: string;
  /** Marshalled TPM2B_PUBLIC of the EK and the AK. */
  readonly ekPublic: Uint8Array;
  readonly akPublic: Uint8Array;
  /** DER of the EK certificate, null when the EK hash was registered by an operator instead. */
  readonly ekCertificate: Uint8Array | null;
  readonly labels: { readonly [key: string]: string };
  /** SHA-256 of the activation secret: the secret itself is never stored. */
  readonly secretHash: Uint8Array;
  readonly createdAt: number;
  readonly expiresAt: number;
}

export interface Agent {
  /** Lowercase hex SHA-256 of the EK's SubjectPublicKeyInfo DER. */
  readonly id: string;
  readonly ekPublic: Uint8Array;
  readonly akPublic: Uint8Array;
  readonly ekCertificate: Uint8Array | null;
  readonly labels: { readonly [key: string]: string };
  readonly status: AgentStatus;
  readonly createdAt: number;
  /** Clock of the last quote whose signature verified (whatever its verdict). */
  readonly lastClock: StoredClock | null;
  /** What the last authentic evidence proved (verified PCRs, facts): what `capture` builds a baseline from. */
  readonly lastEvidence: Json | null;
  readonly lastVerdictId: string | null;
  readonly lastAttestedAt: number | null;
  /** The last attestation that issued credentials (an affirming or warning verdict). */
  readonly lastAffirmedAt: number | null;
  /** Since when the freshness watchdog holds the agent stale (no credentials issued within the window); null: fresh. */
  readonly staleAt: number | null;
}

export interface Challenge {
  /** Lowercase hex of the 32 random bytes. */
  readonly nonce: string;
  readonly agentId: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  /** The baseline the challenge was cut for (null: none applies) and the PCR selection it wants. */
  readonly baselineId: string | null;
  readonly pcrSelection: { readonly [bank: string]: readonly number[] };
}

export type ConsumeResult =
  | { readonly ok: true; readonly challenge: Challenge }
  | { readonly ok: false; readonly reason: 'unknown' | 'expired' };

export interface Baseline {
  readonly id: string;
  readonly name: string;
  /** 1 for the first baseline of a name, then one more for each added under the same name. */
  readonly version: number;
  readonly status: BaselineStatus;
  /** The validated baseline document (src/baseline/document.ts), as JSON. */
  readonly document: Json;
  readonly createdAt: number;
  readonly createdBy: string;
  readonly enforcedAt: number | null;
  readonly retiredAt: number | null;
}

export interface Verdict {
  readonly id: string;
  readonly agentId: string;
  readonly at: number;
  readonly status: VerdictStatus;
  readonly baselineId: string | null;
  readonly baselineVersion: number | null;
  readonly reasons: Json;
  readonly claims: Json;
}

export interface Credential {
  /** X.509 serial (lowercase hex) or JWT jti. */
  readonly id: string;
  readonly kind: CredentialKind;
  readonly agentId: string;
  readonly verdictId: string;
  readonly issuedAt: number;
  readonly expiresAt: number;
  /** Lowercase hex SHA-256 of the certificate DER (x5t#S256 as hex), or of the JWT's certificate. */
  readonly certificateSha256: string;
  readonly revoked: boolean;
  /** The kid of the key that signed it (its CA's for an X509-SVID); null only for rows older than key rotation without any key. */
  readonly issuerKid: string | null;
}

export interface IssuingKey {
  readonly name: KeyName;
  /** JWK thumbprint (RFC 7638) of the public key: the JWT `kid`. */
  readonly kid: string;
  /** Where the private key lives (pkcs11: or file: URI, never with a PIN). */
  readonly uri: string;
  readonly state: KeyState;
  readonly publicKeySpki: Uint8Array;
  /** DER of the CA certificate for `x509-ca`; null for the others. */
  readonly certificate: Uint8Array | null;
  readonly createdAt: number;
  /** The CA certificate's notAfter; null for keys without a certificate. */
  readonly notAfter: number | null;
  /** When it became active; null while prepared. */
  readonly activatedAt: number | null;
  /** When it became old; null before. */
  readonly retiredAt: number | null;
}

/** The keys of every name and state, and the sequence number of that set. */
export interface KeyRing {
  /** Increases with every change of the keys table: the SPIFFE bundle's spiffe_sequence. */
  readonly sequence: number;
  readonly keys: readonly IssuingKey[];
}

/** The CRL a CA serves, as every replica serves it. */
export interface StoredCrl {
  readonly caKid: string;
  /** The CRL Number: only ever grows for one CA. */
  readonly number: number;
  readonly der: Uint8Array;
  /** Lowercase hex SHA-256 of the revoked serials it lists (comma-joined, in order). */
  readonly serialsSha256: string;
  /** When a fresh one is due even without a change. */
  readonly renewAt: number;
}

export interface OperatorToken {
  readonly id: string;
  /** Lowercase hex SHA-256 of the token: the token itself is never stored. */
  readonly hash: string;
  readonly role: Role;
  readonly label: string;
  readonly createdAt: number;
  readonly revokedAt: number | null;
}

export interface ImaProgress {
  readonly agentId: string;
  /** The quote resetCount the state belongs to: another one means the host rebooted. */
  readonly resetCount: number;
  /** ImaState of src/eventlog/ima/incremental.ts, as JSON. */
  readonly state: Json;
}

export interface Page<T> {
  readonly items: readonly T[];
  /** Pass as `after` to get the next page; null on the last page. */
  readonly next: string | null;
}

export interface PageRequest {
  readonly limit: number;
  readonly after?: string;
}

export interface EnrollmentStore {
  /** Stores a pending enrollment (audited). */
  create(enrollment: PendingEnrollment, audit: AuditInput): Promise<void>;
  /**
   * Removes and returns the pending enrollment `id`, or null when there is none or it has
   * expired: an activation attempt uses it up whether it succeeds or not (Keylime CVE-2023-38201).
   * The spending is audited (`enrollment.spend`) in the same transaction.
   */
  take(id: string, now: number): Promise<PendingEnrollment | null>;
  /** Removes expired pending enrollments; the number removed. */
  purgeExpired(now: number): Promise<number>;
}

export interface AgentStore {
  /**
   * Creates the agent of an activated enrollment. An agent with the same id but another EK or
   * AK is refused with ERR_ENROLLMENT_CONFLICT (Keylime CVE-2025-13609); the same EK and AK
   * again returns the existing agent unchanged (its labels are those of the first activation:
   * they select its baseline, so the host cannot relabel itself). Concurrent calls for one EK
   * create one agent.
   */
  activate(
    agent: Omit<Agent, 'status' | 'lastClock' | 'lastEvidence' | 'lastVerdictId' | 'lastAttestedAt' | 'lastAffirmedAt' | 'staleAt'>,
    audit: AuditInput,
  ): Promise<Agent>;
  /**
   * An operator's status change (audited): active -> quarantined | revoked, quarantined ->
   * active (release) | revoked; revoked is final (ERR_AGENT_NOT_ACTIVE). Quarantining or
   * revoking also revokes the agent's unexpired credentials (the CRL, introspection). The same
   * status again changes nothing. Unknown id: ERR_AGENT_NOT_FOUND.
   */
  setStatus(id: string, status: AgentStatus, now: number, audit: AuditInput): Promise<Agent>;
  /**
   * The freshness watchdog: marks stale (audited `agent.stale`, actor system) at most `limit`
   * active agents whose last affirming attestation (or activation, if none) is before
   * `cutoff` and returns their ids. One statement decides, so replicas running it at once
   * mark each agent once.
   */
  markStale(cutoff: number, now: number, limit: number): Promise<readonly string[]>;
  get(id: string): Promise<Agent | null>;
  /** What a challenge and an attestation need of an agent, on every one of them: not its certificate nor its last evidence. */
  attesting(id: string): Promise<AttestingAgent | null>;
  list(page: PageRequest): Promise<Page<Agent>>;
  count(): Promise<number>;
}

export type AttestingAgent = Pick<Agent, 'id' | 'akPublic' | 'labels' | 'status' | 'lastClock'>;

export interface ChallengeStore {
  create(challenge: Challenge): Promise<void>;
  /**
   * Deletes the challenge of `nonce` for `agentId` and returns it: exactly one of concurrent
   * calls gets it. An expired one is deleted too and reported as such; another agent's nonce
   * is `unknown` and stays for its agent.
   */
  consume(nonce: string, agentId: string, now: number): Promise<ConsumeResult>;
  purgeExpired(now: number): Promise<number>;
}

export interface BaselineStore {
  create(baseline: Omit<Baseline, 'version' | 'enforcedAt' | 'retiredAt'>, audit: AuditInput): Promise<Baseline>;
  get(id: string): Promise<Baseline | null>;
  list(page: PageRequest & { readonly status?: BaselineStatus }): Promise<Page<Baseline>>;
  /**
   * staged -> enforced (an enforced baseline of the same name is retired in the same
   * transaction), staged|enforced -> retired. Anything else: ERR_BASELINE_STATE; unknown id:
   * ERR_BASELINE_NOT_FOUND.
   */
  setStatus(id: string, status: 'enforced' | 'retired', now: number, audit: AuditInput): Promise<Baseline>;
  /**
   * The enforced and staged baselines, newest enforcement (or creation) first: id, version and
   * status only, read on every challenge and attestation (documents never change: get them by id).
   */
  inForce(): Promise<readonly Pick<Baseline, 'id' | 'version' | 'status'>[]>;
}

/** Everything one attestation changes, committed in one transaction. */
export interface AttestationRecord {
  readonly verdict: Verdict;
  readonly credentials: readonly Credential[];
  readonly clock: StoredClock | null;
  readonly evidence: Json | null;
  /** Saved when the IMA appraisal moved on; absent: left as it was. */
  readonly ima?: ImaProgress;
  readonly audit: readonly AuditInput[];
  /**
   * Present: the agent is quarantined in the same transaction (a failed appraisal), with this
   * audit entry, unless an attestation of it was recorded at or after `challengedAt` (the
   * answer is a late one to an older challenge: its clock going back is no sign of the host).
   */
  readonly quarantine?: { readonly audit: AuditInput; readonly challengedAt: number };
}

export interface AttestationStore {
  /**
   * Commits an attestation. Refused with ERR_AGENT_NOT_ACTIVE when the agent is no longer
   * active at commit time (revoked meanwhile): nothing of it is stored, nothing is released.
   * Credentials issued make a stale agent fresh again (audited `agent.fresh`).
   */
  record(record: AttestationRecord): Promise<void>;
  imaProgress(agentId: string): Promise<ImaProgress | null>;
  verdict(id: string): Promise<Verdict | null>;
  credentialsOf(agentId: string, page: PageRequest): Promise<Page<Credential>>;
  /** Credentials of all agents (the e2e tests assert nothing was issued). */
  countCredentials(): Promise<number>;
  /** One credential by its id (serial or jti). */
  credential(id: string): Promise<Credential | null>;
  /** X509-SVIDs of the CA `caKid` revoked and not yet expired at `now`: what its CRL lists. */
  revokedCertificates(now: number, caKid: string): Promise<readonly { readonly serial: string; readonly revokedAt: number }[]>;
}

export interface KeyStore {
  /** The keys of one name, every state. */
  list(name?: KeyName): Promise<readonly IssuingKey[]>;
  /**
   * Inserts `key` as the active key of its name unless one is active already; returns the
   * active key either way, so of replicas starting at once all use the one key stored first.
   */
  insertIfNoActive(key: IssuingKey, audit: AuditInput): Promise<IssuingKey>;
  /** Every key and the ring's sequence (read first: a change in between is seen at the next read). */
  ring(): Promise<KeyRing>;
  /** The ring's sequence alone, cheap enough to poll every second. */
  sequence(): Promise<number>;
  /**
   * Inserts `key` as the prepared key of its name (audited `key.prepare`) when none is
   * prepared and the active key is still `successorOf`: of concurrent rotations one key is
   * prepared, and none after the rotation it was meant for has happened. Returns the keys of
   * the name after it.
   */
  prepare(key: IssuingKey, successorOf: string, audit: AuditInput): Promise<readonly IssuingKey[]>;
  /**
   * The prepared key of `name` becomes active and the active one old (audited `key.activate`
   * and `key.retire`, by `actor`), if the active key is still `expectedActiveKid`. When it is
   * not (another replica rotated first) or nothing is prepared, nothing changes. Returns the
   * keys of `name` after it.
   */
  promote(name: KeyName, expectedActiveKid: string, now: number, actor: string): Promise<readonly IssuingKey[]>;
  /**
   * Deletes the old x509-ca and jwt keys retired before `retiredBefore` that signed no
   * credential still valid at `now` (audited `key.prune`); returns them. Active, prepared and
   * audit keys are never pruned (old audit keys verify the checkpoints they signed).
   */
  prune(now: number, retiredBefore: number): Promise<readonly IssuingKey[]>;
  /** The CRL stored for the CA `caKid`, if any. */
  crl(caKid: string): Promise<StoredCrl | null>;
  /**
   * Stores `crl` if the CA's stored CRL is still number `previous` (null: none), which must be
   * less than `crl.number` (ERR_STORE); returns the CRL stored after it, this one or another
   * replica's that came first.
   */
  saveCrl(crl: StoredCrl, previous: number | null): Promise<StoredCrl>;
}

export interface TokenStore {
  create(token: OperatorToken, audit: AuditInput): Promise<void>;
  /** The token with this hash unless revoked. */
  findByHash(hash: string): Promise<OperatorToken | null>;
  /**
   * Creates `token` only if no admin token exists yet (first start); true when created.
   * Several replicas starting at once create one.
   */
  createFirstAdmin(token: OperatorToken, audit: AuditInput): Promise<boolean>;
  list(): Promise<readonly OperatorToken[]>;
  /**
   * Revokes the token `id` (audited): findByHash no longer finds it. Revoking a revoked token
   * changes nothing; an unknown id is ERR_NOT_FOUND.
   */
  revoke(id: string, now: number, audit: AuditInput): Promise<OperatorToken>;
}

export interface AuditStore {
  list(page: PageRequest): Promise<Page<AuditEntry>>;
  head(): Promise<AuditEntry | null>;
  /** The head as the chain's lock row records it (seq 0 and 64 zeros while empty): it moves in the transaction that appends. */
  recordedHead(): Promise<{ readonly seq: number; readonly hash: string }>;
  /** Entries with `after` < seq <= `upTo`, in seq order, at most `limit` (1..1000). */
  range(after: number, upTo: number, limit: number): Promise<readonly AuditEntry[]>;
  /** The first entry past the recorded head, read with the head in one statement: only a row written around the chain's lock is there. */
  pastHead(): Promise<AuditEntry | null>;
  /**
   * Stores `checkpoint` unless one of its seq exists; returns the stored one either way, so
   * replicas checkpointing the same seq store one. Not audited: it is about the chain itself.
   */
  checkpoint(checkpoint: AuditCheckpoint): Promise<AuditCheckpoint>;
  /** Checkpoints in seq order; the cursor is a seq. */
  checkpoints(page: PageRequest): Promise<Page<AuditCheckpoint>>;
  lastCheckpoint(): Promise<AuditCheckpoint | null>;
}

export interface Store {
  readonly dialect: 'sqlite' | 'postgres';
  readonly enrollments: EnrollmentStore;
  readonly agents: AgentStore;
  readonly challenges: ChallengeStore;
  readonly baselines: BaselineStore;
  readonly attestations: AttestationStore;
  readonly keys: KeyStore;
  readonly tokens: TokenStore;
  readonly audit: AuditStore;
  /** Answers when the database does (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}
