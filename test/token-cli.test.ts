/**
 * Operator tokens over their whole life, on both stores: `attestor token create | list |
 * revoke` offline against the verifier's data dir or database, and /v1/tokens on the running
 * verifier; a revoked token is refused at its next use.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { bootstrapCa, createApiClient, type ApiClient } from '../src/client/api-client.js';
import { runAttestor } from '../src/cli/program.js';
import { TokenBody, TokenCreateResponse } from '../src/wire/schemas.js';
import { refused } from './helpers/api.js';
import { runCli } from './helpers/cli.js';
import { startTestVerifier, type TestVerifier } from './helpers/verifier.js';

describe.each(['sqlite', 'postgres'] as const)('operator tokens (%s)', (store) => {
  let v: TestVerifier;
  let caPem: string;
  const clients: ApiClient[] = [];
  const client = (token?: string) => {
    const c = createApiClient({ server: v.url, caPem, ...(token ? { token } : {}) });
    clients.push(c);
    return c;
  };
  const attestor = (args: string[]) => runCli(runAttestor, [...args, '--data-dir', v.dataDir, ...(v.database ? ['--database', v.database] : [])]);

  beforeAll(async () => {
    v = await startTestVerifier({ store });
    caPem = await bootstrapCa(v.url, v.caFingerprint);
  }, 120_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    await v?.stop();
  });

  it('a token created offline works; listed, it shows no secret; revoked offline, it is refused at its next use', async () => {
    const created = await attestor(['token', 'create', '--role', 'operator', '--label', 'ci', '--json']);
    expect(created.code, created.err).toBe(0);
    const { id, token } = TokenCreateResponse.parse(JSON.parse(created.out));
    const operator = client(token);
    expect((await operator.get('/v1/agents')).status).toBe(200);

    const listed = await attestor(['token', 'list', '--json']);
    expect(listed.code, listed.err).toBe(0);
    const items = z.object({ items: z.array(TokenBody) }).parse(JSON.parse(listed.out)).items;
    expect(items.map((t) => t.role).sort()).toEqual(['admin', 'operator']);
    expect(listed.out).not.toContain(token);
    const table = await attestor(['token', 'list']);
    expect(table.out).toMatch(/^ID +ROLE +LABEL +CREATED +REVOKED\n/);
    expect(table.out).toContain(`${id}  operator`);

    const revoked = await attestor(['token', 'revoke', id]);
    expect(revoked.code, revoked.err).toBe(0);
    expect(revoked.out).toMatch(new RegExp(`^token ${id} \\(role operator\\) revoked at `));
    await refused(operator.call('GET', '/v1/agents', z.unknown()), 'ERR_UNAUTHENTICATED');
    // Again: nothing changes.
    expect((await attestor(['token', 'revoke', id])).code).toBe(0);
    const head = (await v.verifier.store.audit.head())!;
    expect(head).toMatchObject({ action: 'token.revoke', subject: id });
    expect(JSON.stringify(head)).not.toContain(token);
  });

  it('over HTTPS: an admin lists and revokes; an auditor lists but may not revoke; an unknown id is ERR_NOT_FOUND', async () => {
    const admin = client(v.adminToken);
    const auditor = await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'auditor', label: 'audit' });
    const victim = await admin.call('POST', '/v1/tokens', TokenCreateResponse, { role: 'relying-party' });
    const asAuditor = client(auditor.token);
    const list = await asAuditor.call('GET', '/v1/tokens', z.object({ items: z.array(TokenBody) }));
    expect(list.items.map((t) => t.id)).toEqual(expect.arrayContaining([auditor.id, victim.id]));
    await refused(asAuditor.call('POST', `/v1/tokens/${victim.id}/revoke`, TokenBody, {}), 'ERR_FORBIDDEN');
    const revoked = await admin.call('POST', `/v1/tokens/${victim.id}/revoke`, TokenBody, {});
    expect(revoked).toMatchObject({ id: victim.id, role: 'relying-party' });
    expect(revoked.revokedAt).not.toBeNull();
    await refused(admin.call('POST', '/v1/tokens/00000000-0000-4000-8000-000000000000/revoke', TokenBody, {}), 'ERR_NOT_FOUND');
  });

  it('usage errors exit 2: a malformed id, a missing role', async () => {
    const bad = await attestor(['token', 'revoke', '../agents']);
    expect(bad.code).toBe(2);
    expect((await attestor(['token', 'create'])).code).toBe(2);
  });
});
