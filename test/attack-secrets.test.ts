/**
 * Finding "A PKCS#11 keys URI with a mistyped pin-value echoes the PIN in its error" (low):
 * parsePkcs11Uri quotes an attribute that has no `=` in full, so `pin-value:123456` (a colon
 * for the equals sign) puts the PIN into ERR_KEYS_URI, which `attestor serve` prints and logs.
 * DESIGN: "Secrets (PINs, tokens, activation secrets) never reach logs, errors or the audit
 * trail". The one-line fix: name the attribute (the text before any `=`, `:` or the first few
 * characters), not the whole part.
 */
import { describe, expect, it } from 'vitest';
import { openKeyManager } from '../src/issuer/open-keys.js';
import { parsePkcs11Uri } from '../src/pkcs11/uri.js';

const PIN = '918273645';

describe('A PKCS#11 keys URI with a mistyped pin-value echoes the PIN in its error', () => {
  for (const uri of [
    `pkcs11:token=attestor?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value:${PIN}`,
    `pkcs11:token=attestor;${PIN}?module-path=/usr/lib/softhsm/libsofthsm2.so`,
  ]) {
    it(`refuses ${uri.replace(PIN, '<PIN>')} with ERR_KEYS_URI, without the PIN`, async () => {
      let caught: unknown;
      try {
        parsePkcs11Uri(uri, 'keys URI');
      } catch (e) {
        caught = e;
      }
      expect(caught).toMatchObject({ code: 'ERR_KEYS_URI' });
      expect((caught as Error).message).not.toContain(PIN);
      await expect(openKeyManager(uri)).rejects.toSatisfy((e: Error & { code?: string }) => e.code === 'ERR_KEYS_URI' && !e.message.includes(PIN));
    });
  }
});
