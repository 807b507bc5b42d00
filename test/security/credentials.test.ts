/**
 * Who gets credentials, and which tokens relying parties accept (real verifier over HTTPS,
 * SQLite, file keys, two swtpm hosts enrolled over the API): a host cannot spend another
 * host's nonce nor get a certificate for another agent's SPIFFE ID; introspection and a jose
 * check against the published JWKS refuse a JWT with `alg: none`, one signed by a key that
 * claims the active kid, and one with a valid signature of a retired key once it was pruned.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, SignJWT, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AttestationResponse, KeyList, TokenCreateResponse } from '../../src/wire/schemas.js';
import { challenge, enforceBaseline, enrollOverApi, evidenceFor, refused, startAttackBed, type AttackBed } from '../attack-harness.js';
import { postForm } from '../helpers/api.js';
import { startSwtpm, type Swtpm } from '../helpers/swtpm.js';
import { expectNothingRecorded, recordOf } from './harness.js';

const AUDIENCE = 'security-service';

let bed: AttackBed;
/** The same verifier, seen from a second host. */
let other: AttackBed;
let otherHost: Swtpm;
let tmp: string;
let agentA: string;
let agentB: string;
let relyingParty: string;
let skewMs = 0;

beforeAll(async () => {
  otherHost = await startSwtpm();
  bed = await startAttackBed({
    store: 'sqlite',
    config: { attestation: { quarantineOnFailure: false, jwtTtlSeconds: 60 } },
    moreEkRootPems: [otherHost.rootCaCertPem, otherHost.caCertPem],
    now: () => Date.now() + skewMs,
  });
  tmp = mkdtempSync(join(tmpdir(), 'attestor-security-credentials-'));
  other = { ...bed, host: otherHost, stateDir: join(tmp, 'other') };
  agentA = await enrollOverApi(bed, { role: 'security' });
  agentB = await enrollOverApi(other, { role: 'security' });
  await enforceBaseline(bed, 'credentials-security', { pcrs: { sha256: { '15': ['00'.repeat(32)] } }, audiences: [AUDIENCE] });
  relyingParty = (await bed.admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party', label: 'security' })).token;
}, 120_000);

afterAll(async () => {
  await bed?.stop();
  await otherHost?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const attestAs = (agentId: string, body: unknown) => bed.anon.call('POST', `/v1/agents/${agentId}/attestations`, AttestationResponse, body);
const introspect = async (token: string) => (await postForm(bed.v.url, bed.caPem, '/v1/introspect', { token }, relyingParty)).body;
const jwks = async () => JSON.parse((await bed.anon.get('/.well-known/jwks.json')).body.toString()) as JSONWebKeySet;

describe('nonces and identities', () => {
  it("a host answering another agent's challenge: ERR_NONCE_UNKNOWN, nothing recorded for either", async () => {
    // Host A quotes B's nonce and sends it as its own attestation.
    const forB = await evidenceFor(other, agentB);
    const asA = await evidenceFor(bed, agentA);
    const before = [await recordOf(bed.v, agentA), await recordOf(bed.v, agentB)];
    await refused(attestAs(agentA, { ...asA, nonce: forB.nonce }), 'ERR_NONCE_UNKNOWN');
    expect([await recordOf(bed.v, agentA), await recordOf(bed.v, agentB)]).toEqual(before);
    // B's challenge is still open for B.
    expect((await attestAs(agentB, forB)).verdict.status).toBe('affirming');
  });

  it("a host asking for a certificate for another agent's SPIFFE ID: its evidence under B's path is not B's (ERR_SIGNATURE_INVALID); a SPIFFE ID in the body is refused", async () => {
    // A's own quote over a challenge of B's, sent as B: the AK that signed it is not B's.
    const forB = await challenge(bed, agentB);
    const asA = await evidenceFor(bed, agentA, () => forB);
    const before = await recordOf(bed.v, agentB);
    await refused(attestAs(agentB, asA), 'ERR_SIGNATURE_INVALID');
    await expectNothingRecorded(bed.v, before, agentB);
    // The identity is the agent id of the path, never something the request names.
    const beforeA = await recordOf(bed.v, agentA);
    await refused(attestAs(agentA, { ...(await evidenceFor(bed, agentA)), spiffeId: `spiffe://attestor.internal/agent/tpm/${agentB}` }), 'ERR_INPUT');
    await expectNothingRecorded(bed.v, beforeA, agentA);
  });
});

describe('JWT-SVIDs relying parties are shown', () => {
  let issued: string;

  it('a real JWT-SVID introspects active and verifies against the JWKS; alg none and a key claiming the active kid do neither', async () => {
    issued = (await attestAs(agentA, { ...(await evidenceFor(bed, agentA)), audience: AUDIENCE })).credentials!.jwt!;
    const claims = decodeJwt(issued);
    const header = decodeProtectedHeader(issued);
    expect(await introspect(issued)).toMatchObject({ active: true });
    await jwtVerify(issued, createLocalJWKSet(await jwks()), { audience: AUDIENCE });

    const part = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const none = `${part({ alg: 'none', typ: 'JWT', kid: header.kid })}.${part(claims)}.`;
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const claimingKid = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: header.kid! }).sign(stranger);
    const otherKid = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: 'not-a-published-kid' }).sign(stranger);
    for (const forged of [none, claimingKid, otherKid]) {
      expect(await introspect(forged)).toStrictEqual({ active: false });
      await expect(jwtVerify(forged, createLocalJWKSet(await jwks()), { audience: AUDIENCE })).rejects.toThrow();
    }
  });

  it('a JWT with a valid signature of a retired key: accepted while the key is published, refused by both once it was pruned', async () => {
    const oldKid = decodeProtectedHeader(issued).kid!;
    const oldKeyUri = (await bed.admin.call('GET', '/v1/keys', KeyList)).items.find((k) => k.kid === oldKid)!.uri;
    await bed.admin.call('POST', '/v1/keys/rotate', KeyList, { key: 'jwt', now: true });
    expect(await introspect(issued)).toMatchObject({ active: true });
    // Once its last credential has expired (and the grace after retirement), the old key is pruned.
    skewMs = 2 * 3600_000;
    await vi.waitFor(async () => expect((await jwks()).keys.map((k) => k.kid)).not.toContain(oldKid), { timeout: 10_000, interval: 250 });
    // A token the retired key signs now, with fresh times: its signature is valid, its key no longer published.
    const retired: KeyObject = createPrivateKey(readFileSync(oldKeyUri.slice('file:'.length)));
    const now = Math.floor((Date.now() + skewMs) / 1000);
    const late = await new SignJWT({ ...decodeJwt(issued), iat: now, exp: now + 60 }).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: oldKid }).sign(retired);
    expect(await introspect(late)).toStrictEqual({ active: false });
    await expect(jwtVerify(late, createLocalJWKSet(await jwks()), { audience: AUDIENCE })).rejects.toThrow();
    skewMs = 0;
  });
});
