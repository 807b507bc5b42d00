/** Helpers of the tests that talk to the real verifier's API. */
import { expect } from 'vitest';
import { request as httpsRequest } from 'node:https';
import { ApiError } from '../../src/client/api-client.js';

/** The ApiError `work` fails with, after checking its code. */
export async function refused(work: Promise<unknown>, code: string): Promise<ApiError> {
  const e = await work.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, `expected ${code}`).toBeInstanceOf(ApiError);
  expect((e as ApiError).remoteCode, (e as ApiError).message).toBe(code);
  return e as ApiError;
}

/** The reason codes of a refused attestation's verdict. */
export function reasonCodes(e: ApiError): string[] {
  return ((e.problem.verdict as { reasons?: { code: string }[] } | undefined)?.reasons ?? []).map((r) => r.code);
}

/** PCR values as the wire carries them ({bank: {"index": bytes}}). */
export function wirePcrs(values: { readonly [bank: string]: { readonly [index: number]: Uint8Array } }): Record<string, Record<string, Uint8Array>> {
  return Object.fromEntries(Object.entries(values).map(([bank, byIndex]) => [bank, Object.fromEntries(Object.entries(byIndex))]));
}

/** POSTs an HTML form (RFC 7662 introspection) to the verifier; its status and JSON answer. */
export function postForm(server: string, caPem: string, path: string, fields: Record<string, string>, bearer?: string): Promise<{ status: number; body: unknown }> {
  const payload = Buffer.from(new URLSearchParams(fields).toString());
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      new URL(path, server),
      {
        method: 'POST',
        ca: caPem,
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(payload.length), ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString() || 'null') }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}
