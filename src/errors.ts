/**
 * Every error Attestor raises on purpose carries a stable `code`. Callers (HTTP edge, CLI,
 * tests) switch on the code, never on the message. Messages describe the input's problem and
 * must never contain secrets (PINs, tokens, activation secrets).
 */
export type ErrorCode =
  // Parsing of TPM wire structures (src/tpm)
  | 'ERR_TPM_TRUNCATED'
  | 'ERR_TPM_TRAILING_BYTES'
  | 'ERR_TPM_SIZE_MISMATCH'
  | 'ERR_TPM_BAD_VALUE'
  | 'ERR_TPM_UNSUPPORTED_ALG'
  | 'ERR_PCR_FILE_MALFORMED'
  // Keys and signatures
  | 'ERR_KEY_UNSUPPORTED'
  | 'ERR_SIGNATURE_UNSUPPORTED'
  | 'ERR_SIGNATURE_SCHEME_MISMATCH'
  | 'ERR_SIGNATURE_INVALID'
  | 'ERR_AK_ATTRIBUTES'
  // Quote appraisal (src/appraisal/verify-quote)
  | 'ERR_QUOTE_MAGIC'
  | 'ERR_QUOTE_TYPE'
  | 'ERR_QUOTE_NONCE_MISMATCH'
  | 'ERR_QUOTE_SHA1_NOT_ALLOWED'
  | 'ERR_QUOTE_PCR_NOT_SIGNED'
  | 'ERR_QUOTE_PCR_MISSING'
  | 'ERR_QUOTE_PCR_DIGEST_MISMATCH'
  | 'ERR_QUOTE_CLOCK_ROLLBACK'
  // Certify appraisal (src/appraisal/verify-certify)
  | 'ERR_CERTIFY_MAGIC'
  | 'ERR_CERTIFY_TYPE'
  | 'ERR_CERTIFY_NONCE_MISMATCH'
  | 'ERR_CERTIFY_NAME_MISMATCH'
  | 'ERR_CERTIFY_KEY_ATTRIBUTES'
  | 'ERR_CERTIFY_SHA1_NOT_ALLOWED'
  // Credential activation (src/tpm/make-credential)
  | 'ERR_MAKECREDENTIAL_INPUT'
  // EK certificates (src/tpm/ek-certificate)
  | 'ERR_EK_CERT_MALFORMED'
  | 'ERR_EK_CERT_CHAIN'
  | 'ERR_EK_CERT_EXPIRED'
  | 'ERR_EK_CERT_KEY_MISMATCH'
  | 'ERR_EK_CERT_NOT_EK'
  | 'ERR_EK_ROOTS_EMPTY'
  // PKCS#11 tokens: the module wrapper and the keys in it (src/pkcs11, src/agent/pkcs11-key, src/issuer/pkcs11-keys)
  | 'ERR_PKCS11_MODULE'
  | 'ERR_PKCS11_TOKEN_NOT_FOUND'
  | 'ERR_PKCS11_LOGIN'
  | 'ERR_PKCS11_KEY_NOT_FOUND'
  | 'ERR_PKCS11_AMBIGUOUS'
  /** The token stopped answering (removed, device error): 503 until it is back, then the verifier reconnects. */
  | 'ERR_PKCS11_UNAVAILABLE'
  | 'ERR_PKCS11'
  // HSM key reports (src/appraisal/hsm-key-report, src/appraisal/verify-hsm-key)
  | 'ERR_HSM_KEY_REPORT_MALFORMED'
  | 'ERR_HSM_KEY_ATTRIBUTES'
  | 'ERR_HSM_TOKEN_NOT_ALLOWED'
  | 'ERR_HSM_KEY_NOT_BOUND'
  // UEFI measured-boot event log (src/eventlog/tcg-*, event-data, replay)
  | 'ERR_EVENTLOG_TRUNCATED'
  | 'ERR_EVENTLOG_MALFORMED'
  | 'ERR_EVENTLOG_UNKNOWN_ALG'
  | 'ERR_EVENTLOG_TOO_LARGE'
  | 'ERR_EVENTLOG_EVENT_DATA'
  // Event-log baseline rules (src/baseline/eventlog-rules)
  | 'ERR_BASELINE_EVENTLOG_RULES'
  // TPM access through the node-tss addon (src/agent/tss.ts, src/agent/tpm-session.ts)
  | 'ERR_TSS_UNAVAILABLE'
  | 'ERR_TSS_TCTI'
  | 'ERR_TSS_UNREACHABLE'
  | 'ERR_TSS_HANDLE'
  | 'ERR_TSS_COMMAND'
  | 'ERR_TSS_INPUT'
  | 'ERR_TSS_CLOSED'
  | 'ERR_TPM_STATE'
  // Linux IMA measurement lists, rules and appraisal (src/eventlog/ima, src/baseline/ima-rules, src/appraisal/appraise-ima)
  | 'ERR_IMA_MALFORMED'
  | 'ERR_IMA_TRUNCATED'
  | 'ERR_IMA_TEMPLATE_UNSUPPORTED'
  | 'ERR_IMA_DIGEST_ALG_UNSUPPORTED'
  | 'ERR_IMA_TEMPLATE_HASH_MISMATCH'
  | 'ERR_IMA_PCR_MISMATCH'
  | 'ERR_IMA_PCR_NOT_QUOTED'
  | 'ERR_IMA_STATE_INVALID'
  | 'ERR_IMA_LOG_SHRUNK'
  | 'ERR_IMA_RULES_INVALID'
  | 'ERR_IMA_SIGNATURE_MALFORMED'
  | 'ERR_IMA_SIGNATURE_UNSUPPORTED'
  | 'ERR_IMA_SIGNATURE_WEAK_HASH'
  // attestor-agent tpm commands (src/tpm/pcr-selection parsePcrSelectionSpec, src/agent/quote-with-values)
  | 'ERR_PCR_SELECTION_SPEC'
  | 'ERR_TPM_CAPABILITY'
  | 'ERR_TPM_PCRS_UNSTABLE'
  // attestor-agent enroll/attest: what the state directory says about this host (src/agent/state-files.ts)
  | 'ERR_AGENT_NOT_ENROLLED'
  | 'ERR_AGENT_STATE'
  // Input given to the CLI or API that is not TPM data
  | 'ERR_INPUT'
  // Baseline documents (src/baseline/document)
  | 'ERR_BASELINE_INVALID'
  // The service: enrollment, challenges, attestations (src/server, src/store)
  | 'ERR_ENROLLMENT_NOT_FOUND'
  | 'ERR_ENROLLMENT_CONFLICT'
  | 'ERR_ACTIVATION_FAILED'
  | 'ERR_AGENT_NOT_FOUND'
  | 'ERR_AGENT_NOT_ACTIVE'
  | 'ERR_NONCE_UNKNOWN'
  | 'ERR_NONCE_EXPIRED'
  | 'ERR_ATTESTATION_REFUSED'
  | 'ERR_NO_BASELINE'
  /** The enforced baseline that applies to an agent was stored before rules it breaks: an operator must replace it. */
  | 'ERR_BASELINE_UNUSABLE'
  | 'ERR_AUDIENCE_NOT_ALLOWED'
  | 'ERR_BASELINE_NOT_FOUND'
  | 'ERR_BASELINE_STATE'
  | 'ERR_NO_EVIDENCE'
  // The HTTP edge (src/server)
  | 'ERR_UNAUTHENTICATED'
  | 'ERR_FORBIDDEN'
  | 'ERR_NOT_FOUND'
  | 'ERR_METHOD_NOT_ALLOWED'
  | 'ERR_BODY_TOO_LARGE'
  | 'ERR_LENGTH_REQUIRED'
  | 'ERR_UNSUPPORTED_MEDIA_TYPE'
  | 'ERR_DECODE'
  | 'ERR_RATE_LIMITED'
  /** The request-body bytes in flight, in all or from the client's network, are at their bound (src/server/body-budget.ts). */
  | 'ERR_BUSY'
  | 'ERR_TIMEOUT'
  | 'ERR_INTERNAL'
  // Storage (src/store)
  | 'ERR_STORE_UNAVAILABLE'
  | 'ERR_STORE_CONFLICT'
  | 'ERR_STORE'
  // The audit chain does not verify (src/audit)
  | 'ERR_AUDIT_CHAIN'
  // Issuing keys and credentials (src/issuer)
  /** The keys table names active keys this verifier cannot load (another replica rotated to a key it cannot reach): it issues nothing. */
  | 'ERR_KEYS_UNAVAILABLE'
  | 'ERR_KEYS_URI'
  | 'ERR_KEYS'
  | 'ERR_ISSUANCE'
  // Configuration (src/config)
  | 'ERR_CONFIG'
  // HTTPS client of the agent and operator CLI (src/client)
  | 'ERR_SERVER_UNTRUSTED'
  | 'ERR_SERVER_UNREACHABLE'
  | 'ERR_SERVER_RESPONSE';

export class AttestorError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Malformed bytes: the input is not a well-formed structure of the expected kind. */
export class ParseError extends AttestorError {}

/** Well-formed evidence that does not prove what it claims (signature, nonce, PCRs, chain). */
export class VerificationError extends AttestorError {}

/** Evidence that is valid but refused by policy (SHA-1 not allowed, key attributes, ...). */
export class PolicyError extends AttestorError {}

/**
 * An agent that may not be challenged or attest now. Its status says which: quarantined (an
 * operator may release it) or revoked (final); the HTTP problem carries it as `agentStatus`.
 */
export class AgentNotActiveError extends AttestorError {
  constructor(
    readonly agentStatus: 'quarantined' | 'revoked',
    message: string,
  ) {
    super('ERR_AGENT_NOT_ACTIVE', message);
  }
}

export function isAttestorError(e: unknown): e is AttestorError {
  return e instanceof AttestorError;
}
