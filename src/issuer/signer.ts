import type { KeyObject } from 'node:crypto';

/**
 * The one signing primitive the issuer needs, whatever holds the key (a PKCS#11 token or, for
 * development, a file): "sign these bytes". Keys are ECDSA P-256; the hash is SHA-256.
 */
export interface Signer {
  /** The key's URI without secrets (`pkcs11:token=...;object=...`, `file:...`), for logs and the keys table. */
  readonly uri: string;
  readonly publicKey: KeyObject;
  /** DER SubjectPublicKeyInfo of the public key. */
  readonly spki: Uint8Array;
  /** True when the private key is in software (development only). */
  readonly software: boolean;
  /** ECDSA P-256 over SHA-256(data): the raw r||s (64 bytes, the JOSE form; DER-encode it for X.509). */
  sign(data: Uint8Array): Promise<Uint8Array>;
  /**
   * Resolves when the key could sign now (its token answers and still holds it), without
   * signing: what readiness asks. Throws what sign would (ERR_PKCS11_UNAVAILABLE).
   */
  check(): Promise<void>;
}

/** The verifier's three keys (SERVICE.md "Keys"). */
export type KeyRole = 'x509-ca' | 'jwt' | 'audit';

/**
 * Where the keys live: each role's first key found there, or generated (non-extractable in a
 * token) on first start; later keys of a role generated for rotation, and any of them found
 * again by the URI its Signer reported (what the keys table records).
 */
export interface KeyManager {
  readonly software: boolean;
  /** The role's first key (labelled or named after the role). */
  signer(role: KeyRole): Promise<Signer>;
  /** A new key pair for `role`, beside the ones it has (key rotation). */
  generate(role: KeyRole): Promise<Signer>;
  /**
   * The key of `role` whose Signer reported `uri`; ERR_KEYS when this manager holds no such key,
   * or holds it under another role (a keys table row cannot make one role's key sign for another).
   */
  signerAt(uri: string, role: KeyRole): Promise<Signer>;
  close(): Promise<void>;
}
