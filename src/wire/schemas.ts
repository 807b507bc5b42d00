import { z } from 'zod';
import { AUDIENCE, LABELS } from '../baseline/document.js';

export { AUDIENCE, LABELS };

/*
 * The v1 wire contract between agent and verifier (DESIGN "Wire contract"): one zod schema per
 * body, shared by the server (which validates what arrives) and the agent (which builds what it
 * sends and checks what it gets). Bytes are base64url strings in JSON and byte strings in CBOR;
 * `bytes()` accepts both and yields a Buffer. Times are RFC 3339 strings. Every string, array
 * and byte field has an upper bound: nothing decodes into unbounded work.
 */

const BASE64URL = /^[A-Za-z0-9_-]*$/;

/** Bytes of at most `max` (and at least `min`) bytes: a base64url string (JSON) or a byte string (CBOR). */
export function bytes(max: number, min = 0) {
  return z
    .union([
      z
        .string()
        .max(Math.ceil((max * 4) / 3) + 4)
        .regex(BASE64URL, 'must be base64url without padding'),
      // Any Uint8Array (Buffers included): what CBOR decodes byte strings to and senders pass.
      z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'must be bytes'),
    ])
    .transform((v, ctx) => {
      const b = typeof v === 'string' ? Buffer.from(v, 'base64url') : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      if (b.length > max || b.length < min) {
        ctx.addIssue({ code: 'custom', message: `must be ${min}..${max} bytes, got ${b.length}` });
        return z.NEVER;
      }
      return b;
    })
    .meta({ contentEncoding: 'base64url', description: `bytes (at most ${max}): base64url in JSON, a byte string in CBOR` });
}

/** Output type of bytes(): what the schemas' parse returns and what senders may pass. */
export type Bytes = Uint8Array;

export const AGENT_ID = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits (SHA-256 of the EK public key)');
export const UUID = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'must be a UUID');
export const TIME = z.iso.datetime({ offset: true });

/** Hash bank names as the TPM code knows them. */
export const BANK = z.enum(['sha1', 'sha256', 'sha384', 'sha512']);
export const PCR_INDEX = z.number().int().min(0).max(23);
export const PCR_SELECTION = z.partialRecord(BANK, z.array(PCR_INDEX).max(24));

// ---- enrollment -------------------------------------------------------------------------

export const EnrollmentRequest = z.strictObject({
  /** TPM2B_PUBLIC of the EK. */
  ekPublic: bytes(1024, 4),
  /** DER EK certificate from the TPM's NV index. */
  ekCertificate: bytes(8192).optional(),
  /** Intermediates sent along (never trusted by themselves). */
  ekChain: z.array(bytes(8192)).max(4).optional(),
  /** TPM2B_PUBLIC of the AK. */
  akPublic: bytes(1024, 4),
  labels: LABELS.optional(),
});

export const EnrollmentResponse = z.strictObject({
  enrollmentId: UUID,
  agentId: AGENT_ID,
  /** TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET for TPM2_ActivateCredential. */
  credentialBlob: bytes(1024),
  encryptedSecret: bytes(1024),
  expiresAt: TIME,
});

export const ActivationRequest = z.strictObject({ secret: bytes(64, 1) });

export const ActivationResponse = z.strictObject({
  agentId: AGENT_ID,
  spiffeId: z.string().max(2048),
});

// ---- attestation ------------------------------------------------------------------------

export const ChallengeResponse = z.strictObject({
  nonce: bytes(32, 32),
  expiresAt: TIME,
  /** The PCRs to quote: what the applicable baseline needs (a default selection when none applies). */
  pcrSelection: PCR_SELECTION,
});

/** PCR values per bank and index ("0".."23"), as the agent read them (unsigned). */
export const PCR_VALUES = z.partialRecord(BANK, z.record(z.string().regex(/^([0-9]|1[0-9]|2[0-3])$/), bytes(64, 20)));

export const TpmKeyEvidence = z.strictObject({
  kind: z.literal('tpm'),
  /** TPM2B_PUBLIC of the identity key. */
  public: bytes(1024, 4),
  /** TPMS_ATTEST of TPM2_Certify by the AK and its TPMT_SIGNATURE. */
  certifyInfo: bytes(1024, 4),
  signature: bytes(1024, 4),
});

export const Pkcs11KeyEvidence = z.strictObject({
  kind: z.literal('pkcs11'),
  /** HsmKeyReport of src/appraisal/hsm-key-report.ts; its own parser checks fields and bounds. */
  report: z.strictObject({
    publicKey: bytes(2048),
    attributes: z.strictObject({
      token: z.boolean(),
      private: z.boolean(),
      sensitive: z.boolean(),
      extractable: z.boolean(),
      neverExtractable: z.boolean(),
      alwaysSensitive: z.boolean(),
      local: z.boolean(),
      keyType: z.number().int().min(0).max(0xffffffff),
    }),
    token: z.strictObject({
      manufacturer: z.string().max(64),
      model: z.string().max(32),
      serial: z.string().max(32),
      label: z.string().max(64),
    }),
    signature: bytes(512),
    alg: z.literal('ES256'),
  }),
});

export const KeyEvidence = z.discriminatedUnion('kind', [TpmKeyEvidence, Pkcs11KeyEvidence]);

export const AttestationRequest = z.strictObject({
  nonce: bytes(32, 32),
  /** TPMS_ATTEST of TPM2_Quote, its TPMT_SIGNATURE, and the values of the quoted PCRs. */
  quote: bytes(1024, 4),
  signature: bytes(1024, 4),
  pcrs: PCR_VALUES,
  /** The UEFI measured-boot log (binary_bios_measurements). */
  eventLog: bytes(1024 * 1024).optional(),
  /** The IMA measurement list (ascii or binary runtime measurements), whole. */
  imaLog: bytes(8 * 1024 * 1024).optional(),
  key: KeyEvidence,
  /** The JWT-SVID audience wanted; none: no JWT. */
  audience: AUDIENCE.optional(),
});

export const Reason = z.object({
  code: z.string().max(64),
  message: z.string().max(2048).optional(),
  bank: z.string().max(16).optional(),
  pcr: z.number().int().optional(),
  event: z.number().int().optional(),
  path: z.string().max(4096).optional(),
  component: z.string().max(512).optional(),
});

export const VerdictBody = z.strictObject({
  id: UUID,
  status: z.enum(['affirming', 'warning', 'contraindicated']),
  reasons: z.array(Reason),
  baseline: z.strictObject({ id: UUID, version: z.number().int() }).nullable(),
  at: TIME,
});

export const Credentials = z.strictObject({
  /** The X509-SVID, PEM. */
  certificate: z.string(),
  /** The CA certificates to verify it with, PEM. */
  bundle: z.string(),
  /** The JWT-SVID for the requested audience, when one was asked for. */
  jwt: z.string().optional(),
  expiresAt: TIME,
  spiffeId: z.string(),
});

export const AttestationResponse = z.strictObject({
  agentId: AGENT_ID,
  verdict: VerdictBody,
  credentials: Credentials.optional(),
});

export type EnrollmentRequest = z.input<typeof EnrollmentRequest>;
export type EnrollmentResponse = z.output<typeof EnrollmentResponse>;
export type ActivationResponse = z.output<typeof ActivationResponse>;
export type ChallengeResponse = z.output<typeof ChallengeResponse>;
export type AttestationRequest = z.output<typeof AttestationRequest>;
export type AttestationRequestInput = z.input<typeof AttestationRequest>;
export type AttestationResponse = z.output<typeof AttestationResponse>;
export type ReasonBody = z.output<typeof Reason>;

// ---- operator routes (JSON) ---------------------------------------------------------------

export const ROLE = z.enum(['admin', 'operator', 'auditor', 'relying-party']);
export const BASELINE_STATUS = z.enum(['staged', 'enforced', 'retired']);

/** POST /v1/baselines: a baseline document (src/baseline/document.ts validates it). */
export const BaselineCreateRequest = z.strictObject({
  name: z.string().min(1).max(128).regex(/^[A-Za-z0-9._-]+$/, 'baseline names are [A-Za-z0-9._-]'),
  document: z.record(z.string(), z.unknown()),
});

/** POST /v1/baselines/capture: a staged baseline from the agent's last authentic evidence. */
export const BaselineCaptureRequest = z.strictObject({
  agentId: AGENT_ID,
  name: BaselineCreateRequest.shape.name.optional(),
  /** JWT audiences the baseline allows. */
  audiences: z.array(AUDIENCE).max(32).optional(),
  /** Host labels the baseline applies to; default: every agent. */
  selector: LABELS.optional(),
});

export const BaselineBody = z.strictObject({
  id: UUID,
  name: z.string(),
  version: z.number().int(),
  status: BASELINE_STATUS,
  document: z.record(z.string(), z.unknown()),
  createdAt: TIME,
  createdBy: z.string(),
  enforcedAt: TIME.nullable(),
  retiredAt: TIME.nullable(),
});

export const AgentBody = z.strictObject({
  id: AGENT_ID,
  spiffeId: z.string(),
  status: z.enum(['active', 'quarantined', 'revoked']),
  labels: z.record(z.string(), z.string()),
  createdAt: TIME,
  lastAttestedAt: TIME.nullable(),
  /** The last attestation that issued credentials. */
  lastAffirmedAt: TIME.nullable(),
  /** Set while the freshness watchdog holds the agent stale: its tokens introspect inactive. */
  staleSince: TIME.nullable(),
  lastVerdict: VerdictBody.nullable(),
});

export const CredentialBody = z.strictObject({
  id: z.string(),
  kind: z.enum(['x509-svid', 'jwt-svid']),
  issuedAt: TIME,
  expiresAt: TIME,
  revoked: z.boolean(),
});

/** GET /v1/agents/{id}: the agent, its last verdict with reasons, its credentials (newest first, one page). */
export const AgentDetailBody = AgentBody.extend({ credentials: z.array(CredentialBody) });

/** A page of a list route: `next` is the `after` query parameter of the next page. */
export function pageOf<T extends z.ZodType>(item: T) {
  return z.strictObject({ items: z.array(item), next: z.string().nullable() });
}

export const TokenCreateRequest = z.strictObject({ role: ROLE, label: z.string().max(128).optional() });

/** An operator token as listed: never the token, never its hash. */
export const TokenBody = z.strictObject({ id: UUID, role: ROLE, label: z.string(), createdAt: TIME, revokedAt: TIME.nullable() });

/** The token itself appears once, in this response. */
export const TokenCreateResponse = z.strictObject({ id: UUID, role: ROLE, label: z.string(), token: z.string(), createdAt: TIME });

export const KEY_ROLE = z.enum(['x509-ca', 'jwt', 'audit']);
export const KEY_STATE = z.enum(['prepared', 'active', 'old']);

/** An issuing key as `GET /v1/keys` lists it: where it lives, never a secret. */
export const KeyBody = z.strictObject({
  kid: z.string(),
  role: KEY_ROLE,
  state: KEY_STATE,
  uri: z.string(),
  createdAt: TIME,
  activatedAt: TIME.nullable(),
  retiredAt: TIME.nullable(),
  /** The CA certificate's notAfter (x509-ca only). */
  notAfter: TIME.nullable(),
  /** SHA-256 of the CA certificate's DER, lowercase hex (x509-ca only): what agents pin. */
  fingerprint: z.string().nullable(),
});
export type KeyBody = z.output<typeof KeyBody>;

export const KeyList = z.strictObject({ items: z.array(KeyBody) });

/** Without `now`: prepare, and activate once the prepared key has been published for the activation delay; with it: both at once. */
export const KeyRotateRequest = z.strictObject({ key: KEY_ROLE, now: z.boolean().optional() });

const HASH = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits (SHA-256)');

/** An entry of the audit chain as stored (its hash covers `at` as milliseconds since the epoch). */
export const AuditEntryBody = z.strictObject({
  seq: z.number().int().positive(),
  at: TIME,
  actor: z.string(),
  action: z.string(),
  subject: z.string(),
  details: z.record(z.string(), z.unknown()),
  prevHash: z.string(),
  hash: z.string(),
});

/** A signed checkpoint: the audit key's ECDSA P-256 signature (raw r||s) over src/audit/checkpoint.ts's bytes. */
export const AuditCheckpointBody = z.strictObject({ seq: z.number().int().positive(), hash: HASH, at: TIME, kid: z.string(), signature: bytes(64, 64) });

export const AUDIT_PROBLEM_KIND = z.enum(['edited', 'deleted', 'inserted', 'reordered', 'truncated', 'rewritten', 'bad-checkpoint']);

/** GET /v1/audit/verify (and `attestor audit verify --json`): intact, or the first problem found. */
export const AuditVerificationBody = z.strictObject({
  ok: z.boolean(),
  /** Entries verified (before the problem, when there is one). */
  entries: z.number().int().nonnegative(),
  /** The chain's last entry, when intact. */
  head: z.strictObject({ seq: z.number().int().nonnegative(), hash: HASH }).optional(),
  checkpoints: z.strictObject({
    stored: z.number().int().nonnegative(),
    verified: z.number().int().nonnegative(),
    last: z.strictObject({ seq: z.number().int().positive(), at: TIME, kid: z.string() }).nullable(),
  }),
  /** Entries after the last checkpoint, when intact: only the head row vouches for them. */
  uncheckpointed: z.number().int().nonnegative().optional(),
  problem: z.strictObject({ kind: AUDIT_PROBLEM_KIND, seq: z.number().int(), detail: z.string(), message: z.string() }).optional(),
});
export type AuditEntryBody = z.output<typeof AuditEntryBody>;
export type AuditVerificationBody = z.output<typeof AuditVerificationBody>;

export const Problem = z.object({
  type: z.string(),
  title: z.string(),
  status: z.number().int(),
  detail: z.string().optional(),
  code: z.string(),
  requestId: z.string().optional(),
  verdict: VerdictBody.optional(),
  agentStatus: z.enum(['quarantined', 'revoked']).optional(),
});

export type BaselineBody = z.output<typeof BaselineBody>;
export type AgentBody = z.output<typeof AgentBody>;
export type AgentDetailBody = z.output<typeof AgentDetailBody>;
export type Problem = z.output<typeof Problem>;

/** POST /v1/introspect (RFC 7662 §2.1), a form body. */
export const IntrospectionRequest = z.strictObject({
  token: z.string().min(1).max(8192),
  token_type_hint: z.string().max(64).optional(),
});

/** RFC 7662 §2.2: `{"active": false}` and nothing else for a token that is not live. */
export const IntrospectionResponse = z.strictObject({
  active: z.boolean(),
  iss: z.string().optional(),
  sub: z.string().optional(),
  aud: z.string().optional(),
  iat: z.number().int().optional(),
  exp: z.number().int().optional(),
  jti: z.string().optional(),
  cnf: z.strictObject({ 'x5t#S256': z.string() }).optional(),
});
