/**
 * The agent's answer to a challenge (src/agent/evidence.ts, measurement-logs.ts), built on a
 * real swtpm (and SoftHSM for a PKCS#11 key) for a challenge made here, checked the way the
 * verifier checks it: TPM2_Certify of the identity key over the bare nonce (verifyCertify), the
 * quote with the AK and quoteQualifyingData (verifyQuote), the HSM key report against the
 * quote (verifyHsmKey); and the request round-trips through the wire schema in JSON and CBOR.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAgentKey, closeAgentKey, parseAgentKeySpec, type AgentKey } from '../src/agent/agent-key.js';
import { buildAttestationRequest } from '../src/agent/evidence.js';
import type { AttestationRequestInput } from '../src/wire/schemas.js';
import { EVENT_LOG_MAX, IMA_LOG_MAX, readLog } from '../src/agent/measurement-logs.js';
import { generateKey } from '../src/agent/pkcs11-key.js';
import { TpmSession } from '../src/agent/tpm-session.js';
import { quoteQualifyingData } from '../src/appraisal/key-binding.js';
import { verifyCertify } from '../src/appraisal/verify-certify.js';
import { verifyHsmKey } from '../src/appraisal/verify-hsm-key.js';
import { verifyQuote } from '../src/appraisal/verify-quote.js';
import { hex } from '../src/bytes.js';
import { parseTpm2bPublic } from '../src/tpm/public.js';
import { decodeBody, encodeBody, type BodyFormat } from '../src/wire/codec.js';
import { AttestationRequest, type ChallengeResponse } from '../src/wire/schemas.js';
import { codeOf } from './helpers/code-of.js';
import { rejection } from './helpers/rejection.js';
import { startSoftHsm, type SoftHsm } from './helpers/softhsm.js';
import { startSwtpm, tpm2, type Swtpm } from './helpers/swtpm.js';
import { vector } from './vectors.js';

let sw: Swtpm;
let hsm: SoftHsm;
let session: TpmSession;
let pkcs11: AgentKey;
let tmp: string;

beforeAll(async () => {
  [sw, hsm] = await Promise.all([startSwtpm(), startSoftHsm()]);
  tmp = mkdtempSync(join(tmpdir(), 'attestor-agent-evidence-'));
  session = await TpmSession.open({ tcti: sw.tcti, stateDir: join(tmp, 'state') });
  const uri = `pkcs11:token=${hsm.tokenLabel};object=agent-key?module-path=${hsm.modulePath}`;
  pkcs11 = await openAgentKey(parseAgentKeySpec(uri), { ATTESTOR_AGENT_PKCS11_PIN: hsm.userPin });
});
afterAll(async () => {
  if (pkcs11) await closeAgentKey(pkcs11);
  await session?.close();
  await Promise.all([sw?.stop(), hsm?.stop()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const TPM_KEY: AgentKey = { kind: 'tpm' };
const SELECTION = { sha256: [0, 1, 2, 3, 4, 5, 6, 7], sha1: [7] };

function challenge(pcrSelection: ChallengeResponse['pcrSelection'] = SELECTION): ChallengeResponse {
  return { nonce: randomBytes(32), expiresAt: new Date(Date.now() + 60_000).toISOString(), pcrSelection };
}

const ak = () => parseTpm2bPublic(session.ak.public);

/** The verifier's checks of an answer with a TPM identity key; returns the verified quote. */
function verifyTpmAnswer(req: AttestationRequest, nonce: Uint8Array) {
  if (req.key.kind !== 'tpm') throw new Error('not a TPM key');
  const keyPublic = parseTpm2bPublic(req.key.public);
  verifyCertify(ak(), { keyPublic, certifyInfo: req.key.certifyInfo, signature: req.key.signature }, { qualifyingData: nonce });
  return verifyQuote(
    ak(),
    { quote: req.quote, signature: req.signature, pcrs: req.pcrs },
    { qualifyingData: quoteQualifyingData(nonce, { kind: 'tpm', public: req.key.public }), requiredPcrs: SELECTION, allowSha1: true },
  );
}

/** What the server sees: the body encoded by the agent, decoded and parsed by the wire schema. */
function overTheWire(req: AttestationRequestInput, format: BodyFormat): AttestationRequest {
  return AttestationRequest.parse(decodeBody(encodeBody(req, format), format));
}

describe('evidence for a TPM identity key', () => {
  it('certifies the identity key over the bare nonce and binds it into the quote; verifies after JSON and CBOR', async () => {
    const c = challenge();
    const sent = await buildAttestationRequest({ session, key: TPM_KEY, challenge: c, audience: 'spiffe://example.org/db' });
    for (const format of ['json', 'cbor'] as const) {
      const req = overTheWire(sent, format);
      expect(hex(req.nonce)).toBe(hex(c.nonce));
      expect(req.audience).toBe('spiffe://example.org/db');
      expect(req.eventLog).toBeUndefined();
      expect(req.imaLog).toBeUndefined();
      expect(req.key).toMatchObject({ kind: 'tpm' });
      if (req.key.kind === 'tpm') expect(hex(req.key.public)).toBe(hex((await session.identityKey()).public));
      const verified = verifyTpmAnswer(req, c.nonce);
      // Banks in the challenge's order.
      expect(Object.keys(verified.pcrs)).toEqual(['sha256', 'sha1']);
      expect(Object.keys(verified.pcrs.sha256!)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7']);
    }
  });

  it('quotes the TPM\'s current PCR values, as tpm2_pcrread reads them', async () => {
    await tpm2(sw, ['tpm2_pcrextend', `4:sha256=${randomBytes(32).toString('hex')}`]);
    const c = challenge({ sha256: [4] });
    const req = overTheWire(await buildAttestationRequest({ session, key: TPM_KEY, challenge: c }), 'cbor');
    await tpm2(sw, ['tpm2_pcrread', 'sha256:4', '-o', 'pcr4.bin']);
    expect(hex(req.pcrs.sha256!['4']!)).toBe(hex(readFileSync(join(sw.dir, 'pcr4.bin'))));
  });

  it('is refused for another nonce, for the bare nonce as the quote\'s qualifying data, and for another key', async () => {
    const c = challenge();
    const req = overTheWire(await buildAttestationRequest({ session, key: TPM_KEY, challenge: c }), 'json');
    if (req.key.kind !== 'tpm') throw new Error('not a TPM key');
    const other = randomBytes(32);
    expect(codeOf(() => verifyTpmAnswer(req, other))).toBe('ERR_CERTIFY_NONCE_MISMATCH');
    const evidence = { quote: req.quote, signature: req.signature, pcrs: req.pcrs };
    expect(codeOf(() => verifyQuote(ak(), evidence, { qualifyingData: c.nonce }))).toBe('ERR_QUOTE_NONCE_MISMATCH');
    // The quote vouches for this identity key only: presented with the AK's public area instead, it does not verify.
    const swapped = quoteQualifyingData(c.nonce, { kind: 'tpm', public: session.ak.public });
    expect(codeOf(() => verifyQuote(ak(), evidence, { qualifyingData: swapped }))).toBe('ERR_QUOTE_NONCE_MISMATCH');
  });

  it('refuses, before quoting, a bank the TPM has not allocated (ERR_TPM_CAPABILITY)', async () => {
    await rejection(buildAttestationRequest({ session, key: TPM_KEY, challenge: challenge({ sha384: [0] }) }), 'ERR_TPM_CAPABILITY');
  });
});

describe('evidence for a PKCS#11 key', () => {
  it('carries the key report; the quote binds it and verifyHsmKey accepts it, after JSON and CBOR', async () => {
    const c = challenge();
    const sent = await buildAttestationRequest({ session, key: pkcs11, challenge: c });
    for (const format of ['json', 'cbor'] as const) {
      const req = overTheWire(sent, format);
      if (req.key.kind !== 'pkcs11') throw new Error('not a PKCS#11 key');
      const { report } = req.key;
      const verified = verifyQuote(
        ak(),
        { quote: req.quote, signature: req.signature, pcrs: req.pcrs },
        { qualifyingData: quoteQualifyingData(c.nonce, { kind: 'pkcs11', evidence: report }), requiredPcrs: SELECTION, allowSha1: true },
      );
      const key = verifyHsmKey(report, { nonce: c.nonce, quotedQualifyingData: verified.attest.extraData });
      if (pkcs11.kind !== 'pkcs11') throw new Error('not a PKCS#11 key');
      expect(key.publicKey.equals(pkcs11.key.publicKey)).toBe(true);
      expect(key.reported.token.label).toBe(hsm.tokenLabel);
    }
  });

  it('is refused when another key\'s report, valid for the same nonce, is swapped in (ERR_HSM_KEY_NOT_BOUND)', async () => {
    if (pkcs11.kind !== 'pkcs11') throw new Error('not a PKCS#11 key');
    const c = challenge();
    const req = overTheWire(await buildAttestationRequest({ session, key: pkcs11, challenge: c }), 'cbor');
    if (req.key.kind !== 'pkcs11') throw new Error('not a PKCS#11 key');
    const verified = verifyQuote(
      ak(),
      { quote: req.quote, signature: req.signature, pcrs: req.pcrs },
      { qualifyingData: quoteQualifyingData(c.nonce, { kind: 'pkcs11', evidence: req.key.report }), allowSha1: true },
    );
    const other = await generateKey(pkcs11.session, 'swapped-in');
    const swapped = await buildAttestationRequest({ session, key: { ...pkcs11, key: other }, challenge: c });
    if (swapped.key.kind !== 'pkcs11') throw new Error('not a PKCS#11 key');
    const report = overTheWire(swapped, 'json').key;
    if (report.kind !== 'pkcs11') throw new Error('not a PKCS#11 key');
    expect(codeOf(() => verifyHsmKey(report.report, { nonce: c.nonce, quotedQualifyingData: verified.attest.extraData }))).toBe('ERR_HSM_KEY_NOT_BOUND');
  });
});

describe('measurement logs', () => {
  const file = (name: string, bytes: Uint8Array) => {
    const path = join(tmp, name);
    writeFileSync(path, bytes);
    return path;
  };

  it('sends the files given, read after the quote, unchanged', async () => {
    const eventLog = vector('eventlog/event-arch-linux.bin');
    const imaLog = vector('ima/ascii_runtime_measurements');
    const logs = {
      eventLog: { path: file('bios.bin', eventLog), ifPresent: false },
      imaLog: { path: file('ima.txt', imaLog), ifPresent: false },
    };
    const c = challenge({ sha256: [0, 10] });
    for (const format of ['json', 'cbor'] as const) {
      const req = overTheWire(await buildAttestationRequest({ session, key: TPM_KEY, challenge: c, logs }), format);
      expect(hex(req.eventLog!)).toBe(hex(eventLog));
      expect(hex(req.imaLog!)).toBe(hex(imaLog));
    }
  });

  it('leaves out a default log the host does not have; a named file that is missing is ERR_INPUT', async () => {
    const missing = join(tmp, 'no-such-log');
    const req = await buildAttestationRequest({
      session,
      key: TPM_KEY,
      challenge: challenge(),
      logs: { eventLog: { path: missing, ifPresent: true }, imaLog: { path: missing, ifPresent: true } },
    });
    expect(req.eventLog).toBeUndefined();
    expect(req.imaLog).toBeUndefined();
    const e = await rejection(readLog({ path: missing, ifPresent: false }, 'UEFI event log', EVENT_LOG_MAX), 'ERR_INPUT');
    expect(e.message).toBe(`cannot read the UEFI event log ${missing}: ENOENT`);
  });

  it('reads a log of exactly the limit and refuses one byte more (ERR_INPUT); the limits are the wire schema\'s', async () => {
    const path = file('big.bin', randomBytes(1000));
    expect((await readLog({ path, ifPresent: false }, 'log', 1000))?.length).toBe(1000);
    const e = await rejection(readLog({ path, ifPresent: true }, 'IMA measurement list', 999), 'ERR_INPUT');
    expect(e.message).toBe(`the IMA measurement list ${path} is larger than the 999 bytes the verifier accepts`);

    const req = overTheWire(await buildAttestationRequest({ session, key: TPM_KEY, challenge: challenge({ sha256: [0] }) }), 'json');
    const withLogs = (eventLog: number, imaLog: number) =>
      AttestationRequest.safeParse({ ...req, eventLog: new Uint8Array(eventLog), imaLog: new Uint8Array(imaLog) }).success;
    expect(withLogs(EVENT_LOG_MAX, IMA_LOG_MAX)).toBe(true);
    expect(withLogs(EVENT_LOG_MAX + 1, IMA_LOG_MAX)).toBe(false);
    expect(withLogs(EVENT_LOG_MAX, IMA_LOG_MAX + 1)).toBe(false);
  });

  it('names a log it may not read (ERR_INPUT), whether named or a default', async () => {
    const dir = join(tmp, 'a-directory');
    mkdirSync(dir);
    for (const ifPresent of [true, false]) {
      const e = await rejection(readLog({ path: dir, ifPresent }, 'UEFI event log', EVENT_LOG_MAX), 'ERR_INPUT');
      expect(e.message).toBe(`cannot read the UEFI event log ${dir}: EISDIR`);
    }
  });
});
