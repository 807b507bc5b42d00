/**
 * Second-round attack on the PKCS#11 URI fix (errors never quote the PIN). The test asserts
 * the secure behaviour; it fails until it is in place.
 */
import { describe, expect, it } from 'vitest';
import { isAttestorError } from '../src/errors.js';
import { parsePkcs11Uri } from '../src/pkcs11/uri.js';

describe('A PIN with an unencoded "&" is quoted in the error', () => {
  it('the part of the PIN after "&" that looks like an attribute name is not in the message', () => {
    // The PIN is "4711&correcthorse=battery": typed into the URI without percent-encoding the "&".
    let caught: unknown;
    try {
      parsePkcs11Uri('pkcs11:token=attestor?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=4711&correcthorse=battery');
    } catch (e) {
      caught = e;
    }
    expect(isAttestorError(caught) && caught.code).toBe('ERR_KEYS_URI');
    // Before the fix: 'PKCS#11 URI: query attribute "correcthorse" is not supported (...)'.
    expect((caught as Error).message).not.toContain('correcthorse');
  });
});
