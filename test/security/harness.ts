/**
 * What the security tests share besides test/attack-harness.ts: raw requests with any token
 * and body (the API client would not send most of them), and the record of what a refused
 * request must not have changed.
 */
import { request as httpsRequest } from 'node:https';
import { expect } from 'vitest';
import type { TestVerifier } from '../helpers/verifier.js';

export interface RawReply {
  readonly status: number;
  /** The problem's code (problem+json answers), else undefined. */
  readonly code: string | undefined;
  readonly body: Buffer;
}

export interface RawRequest {
  readonly method: string;
  readonly path: string;
  readonly token?: string;
  /** JSON body, or an HTML form when `form` is set. */
  readonly body?: unknown;
  readonly form?: Record<string, string>;
}

/** Sends `req` over TLS pinned to `caPem`; never throws on an HTTP status. */
export function send(v: TestVerifier, caPem: string, req: RawRequest): Promise<RawReply> {
  const payload = req.form
    ? Buffer.from(new URLSearchParams(req.form).toString())
    : req.body === undefined
      ? undefined
      : Buffer.from(JSON.stringify(req.body));
  const headers: Record<string, string> = {
    ...(payload && { 'content-type': req.form ? 'application/x-www-form-urlencoded' : 'application/json', 'content-length': String(payload.length) }),
    ...(req.token !== undefined && { authorization: `Bearer ${req.token}` }),
  };
  return new Promise((resolve, reject) => {
    const r = httpsRequest(new URL(req.path, v.url), { method: req.method.toUpperCase(), ca: caPem, agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        let code: string | undefined;
        if (String(res.headers['content-type'] ?? '').startsWith('application/problem+json')) {
          const problem = JSON.parse(body.toString('utf8')) as { code?: unknown };
          if (typeof problem.code === 'string') code = problem.code;
        }
        resolve({ status: res.statusCode ?? 0, code, body });
      });
      res.on('error', reject);
    });
    r.on('error', reject);
    r.end(payload);
  });
}

/** What an attestation or enrollment can change: compared before and after a refused request. */
export interface StateRecord {
  readonly credentials: number;
  readonly auditSeq: number | null;
  readonly lastVerdictId: string | null;
  readonly lastClock: unknown;
  readonly status: string | null;
}

export async function recordOf(v: TestVerifier, agentId?: string): Promise<StateRecord> {
  const { store } = v.verifier;
  const agent = agentId ? await store.agents.get(agentId) : null;
  return {
    credentials: await store.attestations.countCredentials(),
    auditSeq: (await store.audit.head())?.seq ?? null,
    lastVerdictId: agent?.lastVerdictId ?? null,
    lastClock: agent?.lastClock ?? null,
    status: agent?.status ?? null,
  };
}

/** Evidence that is not the agent's own was refused: nothing was stored, issued or audited. */
export async function expectNothingRecorded(v: TestVerifier, before: StateRecord, agentId?: string): Promise<void> {
  expect(await recordOf(v, agentId)).toEqual(before);
}

/**
 * Authentic evidence was refused: its verdict is recorded (one `attestation.verdict` entry,
 * plus `agent.quarantine` when that is configured), nothing is issued.
 */
export async function expectRefusedVerdictOnly(v: TestVerifier, before: StateRecord, agentId: string): Promise<void> {
  const after = await recordOf(v, agentId);
  expect(after.credentials).toBe(before.credentials);
  expect(after.lastVerdictId).not.toBe(before.lastVerdictId);
  const head = (await v.verifier.store.audit.head())!.seq;
  const entries = await v.verifier.store.audit.range(before.auditSeq ?? 0, head, 10);
  expect(entries.map((e) => e.action).filter((a) => a !== 'agent.quarantine')).toEqual(['attestation.verdict']);
}
