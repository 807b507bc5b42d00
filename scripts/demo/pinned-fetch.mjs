// fetch() with the verifier's CA certificates as the only trust anchors (node's fetch takes
// no CA option, so node:https), in the shape jose's customFetch expects.
import { Agent, request } from 'node:https';

export function fetchPinned(url, ca, init = {}) {
  return new Promise((resolve, reject) => {
    const req = request(new URL(url), { agent: new Agent({ ca }), method: init.method ?? 'GET', headers: init.headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve(new Response(Buffer.concat(chunks), { status: res.statusCode, headers: res.headers })));
    });
    req.on('error', reject);
    req.end(init.body);
  });
}
