import { it } from 'vitest';
import { request as httpsRequest } from 'node:https';
import { bootstrapCa } from '../src/client/api-client.js';
import { startTestVerifier } from './helpers/verifier.js';
import { encodeBody } from '../src/wire/codec.js';

function post(url: string, ca: string, type: string, body: Uint8Array): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method: 'POST', ca, agent: false, headers: { 'content-type': type, 'content-length': String(body.length) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
it('probe', async () => {
  const v = await startTestVerifier({});
  try {
    const ca = await bootstrapCa(v.url, v.caFingerprint);
    const url = `${v.url}/v1/agents/${'0'.repeat(64)}/attestations`;
    for (const n of [1000, 150000, 1_000_000, 1_900_000]) {
      const sha256: Record<string, number> = {};
      for (let i = 0; i < n; i++) sha256[String(i + 100)] = 0;
      for (const fmt of ['json', 'cbor'] as const) {
        const body = encodeBody({ pcrs: { sha256 } }, fmt);
        if (body.length > 12 * 1024 * 1024) { console.log(n, fmt, 'too big', body.length); continue; }
        const t = Date.now();
        const r = await post(url, ca, `application/${fmt}`, body);
        console.log(n, fmt, body.length, r.status, Date.now() - t, 'ms', r.text.slice(0, 200));
      }
    }
  } finally { await v.stop(); }
}, 300_000);
