import type { ErrorCode } from '../errors.js';

/*
 * The HTTP edge's one table from error code to status (RFC 9457 problem details). Codes not
 * listed are the evidence core's: input that does not parse is a 400, evidence that does not
 * verify or is refused by policy a 403. Anything that is not an AttestorError is a 500 whose
 * text never reaches the client.
 */

const STATUS: Partial<Record<ErrorCode, number>> = {
  ERR_INPUT: 400,
  ERR_DECODE: 400,
  ERR_BASELINE_INVALID: 400,
  ERR_AK_ATTRIBUTES: 400,
  ERR_KEY_UNSUPPORTED: 400,
  ERR_UNAUTHENTICATED: 401,
  ERR_FORBIDDEN: 403,
  ERR_ACTIVATION_FAILED: 403,
  ERR_NONCE_UNKNOWN: 403,
  ERR_NONCE_EXPIRED: 403,
  ERR_ATTESTATION_REFUSED: 403,
  ERR_NO_BASELINE: 403,
  ERR_AGENT_NOT_ACTIVE: 403,
  ERR_AUDIENCE_NOT_ALLOWED: 403,
  ERR_NOT_FOUND: 404,
  ERR_AGENT_NOT_FOUND: 404,
  ERR_ENROLLMENT_NOT_FOUND: 404,
  ERR_BASELINE_NOT_FOUND: 404,
  ERR_METHOD_NOT_ALLOWED: 405,
  ERR_TIMEOUT: 408,
  ERR_ENROLLMENT_CONFLICT: 409,
  ERR_BASELINE_STATE: 409,
  ERR_NO_EVIDENCE: 409,
  ERR_LENGTH_REQUIRED: 411,
  ERR_BODY_TOO_LARGE: 413,
  ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  ERR_RATE_LIMITED: 429,
  ERR_INTERNAL: 500,
  ERR_STORE: 500,
  ERR_ISSUANCE: 500,
  ERR_KEYS: 500,
  ERR_PKCS11: 500,
  ERR_BUSY: 503,
  ERR_BASELINE_UNUSABLE: 503,
  ERR_STORE_UNAVAILABLE: 503,
  ERR_KEYS_UNAVAILABLE: 503,
  ERR_PKCS11_UNAVAILABLE: 503,
};

const PARSE_PREFIXES = ['ERR_TPM_', 'ERR_EVENTLOG_', 'ERR_IMA_', 'ERR_PCR_', 'ERR_HSM_KEY_REPORT_MALFORMED', 'ERR_EK_CERT_MALFORMED'];

export function statusOf(code: ErrorCode): number {
  const status = STATUS[code];
  if (status !== undefined) return status;
  return PARSE_PREFIXES.some((p) => code.startsWith(p)) ? 400 : 403;
}

const TITLES: Readonly<Record<number, string>> = {
  400: 'Bad request',
  401: 'Unauthenticated',
  403: 'Forbidden',
  404: 'Not found',
  405: 'Method not allowed',
  408: 'Request timeout',
  409: 'Conflict',
  411: 'Length required',
  413: 'Payload too large',
  415: 'Unsupported media type',
  429: 'Too many requests',
  500: 'Internal error',
  503: 'Service unavailable',
};

export function titleOf(status: number): string {
  return TITLES[status] ?? 'Error';
}

/** Problem type URIs: one per code, stable, under the project's namespace. */
export function problemType(code: string): string {
  return `urn:attestor:problem:${code.toLowerCase().replace(/^err_/, '').replace(/_/g, '-')}`;
}
