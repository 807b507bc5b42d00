import { createHash } from 'node:crypto';
import { AttestorError } from '../errors.js';
import type { OperatorToken, Store } from '../store/store.js';

/** Operator tokens are 256-bit random values, sent as base64url: 43 characters. */
const TOKEN = /^[A-Za-z0-9_-]{43}$/;

/** The hash under which a token is stored (the token itself never is). */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/**
 * The operator token of an `Authorization: Bearer` header: ERR_UNAUTHENTICATED when the header
 * is missing, malformed, or names no live token (one message for all three: which one it was
 * is nobody's business).
 */
export async function authenticate(store: Store, header: string | undefined): Promise<OperatorToken> {
  const m = /^Bearer ([^\s]+)$/i.exec(header ?? '');
  const token = m?.[1];
  const found = token && TOKEN.test(token) ? await store.tokens.findByHash(tokenHash(token)) : null;
  if (!found) throw new AttestorError('ERR_UNAUTHENTICATED', 'a valid operator token is required (Authorization: Bearer <token>)');
  return found;
}
