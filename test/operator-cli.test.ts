import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiError, bootstrapCa, createApiClient } from '../src/client/api-client.js';
import { runAgent } from '../src/cli/agent-program.js';
import { describeError, UsageError } from '../src/cli/io.js';
import { runAttestor } from '../src/cli/program.js';
import { resolveServerTarget } from '../src/cli/server-options.js';
import { formatTable, printable } from '../src/cli/table.js';
import { AgentBody, AgentDetailBody, BaselineBody, pageOf, TokenCreateResponse } from '../src/wire/schemas.js';
import { runCli } from './helpers/cli.js';
import { startSwtpm, tpm2, type Swtpm } from './helpers/swtpm.js';
import { startTestVerifier, type TestVerifier } from './helpers/verifier.js';

const attestor = (args: string[]) => runCli(runAttestor, args);

const FINGERPRINT = 'ab'.repeat(32);
const AGENT = 'cd'.repeat(32);
const UUID_1 = '0b5b3f7e-4a0e-4c55-9a43-3f1b2c6d7e8f';

/** Terminal-steering characters: ESC (ANSI sequences), CSI, DEL, a line separator, RTL override. */
const STEERING_SAMPLES = ['\x1b', '\x9b', '\x7f', '\r', '\u2028', '\u202e', '\u2066'];
const STEERING = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

const codePoints = (s: string) => [...s];

describe('formatTable', () => {
  it('aligns columns two spaces apart and leaves the last column unpadded', () => {
    expect(formatTable([['a', 'bbb', 'c'], ['dddd', 'e', 'ffff']], ['ID', 'NAME', 'X'])).toBe(
      ['ID    NAME  X', 'a     bbb   c', 'dddd  e     ffff', ''].join('\n'),
    );
    expect(formatTable([])).toBe('');
    expect(formatTable([], ['ID', 'NAME'])).toBe('ID  NAME\n');
    // an empty first column is an indent of two spaces
    expect(formatTable([['', 'x', 'y']])).toBe('  x  y\n');
  });

  it('escapes what would steer a terminal, and nothing else', () => {
    expect(printable('red\x1b[31m')).toBe('red\\x1b[31m');
    expect(printable('\x9b2J\x7f')).toBe('\\x9b2J\\x7f');
    expect(printable('a\u202eb\u2028c')).toBe('a\\u202eb\\u2028c');
    expect(printable('/usr/bin/ls é 字 𝔸 tab\t')).toBe('/usr/bin/ls é 字 𝔸 tab\\x09');
    expect(formatTable([['x\ny', 'z']])).toBe('x\\x0ay  z\n');
  });

  it('property: one line per row, every cell starts at its column, no steering character survives', () => {
    const cell = fc.string({ unit: fc.constantFrom('a', 'Z', '-', 'é', '字', '𝔸', ...STEERING_SAMPLES), maxLength: 12 });
    fc.assert(
      fc.property(fc.array(fc.array(cell, { minLength: 1, maxLength: 5 }), { maxLength: 8 }), (rows) => {
        const text = formatTable(rows);
        const lines = text.split('\n');
        expect(lines.pop()).toBe('');
        expect(lines).toHaveLength(rows.length);
        const widths: number[] = [];
        for (const row of rows) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, codePoints(printable(c)).length)));
        rows.forEach((row, r) => {
          const line = codePoints(lines[r] ?? '');
          expect(STEERING.test(lines[r] ?? '')).toBe(false);
          let start = 0;
          row.forEach((c, i) => {
            expect(line.slice(start, start + codePoints(printable(c)).length).join('')).toBe(printable(c));
            start += (widths[i] ?? 0) + 2;
          });
        });
      }),
    );
  });

  it('property: any text at all comes out on its own line, with no steering character', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' })), { maxLength: 6 }), (rows) => {
        const text = formatTable(rows, ['K', 'V']);
        expect(text.split('\n')).toHaveLength(rows.length + 2);
        expect(STEERING.test(text)).toBe(false);
      }),
    );
  });
});

describe('server options', () => {
  const env = { ATTESTOR_SERVER: 'https://verifier.example:8443', ATTESTOR_CA_FINGERPRINT: FINGERPRINT, ATTESTOR_TOKEN: 'secret-token-1' };
  const usage = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      expect(e).toBeInstanceOf(UsageError);
      return (e as UsageError).message;
    }
    return expect.unreachable('no usage error');
  };

  it('takes flags before the environment and the token from the environment only', () => {
    expect(resolveServerTarget({}, env)).toEqual({ server: 'https://verifier.example:8443', caFingerprint: FINGERPRINT, token: 'secret-token-1' });
    const colons = FINGERPRINT.toUpperCase().match(/../g)?.join(':') ?? '';
    expect(resolveServerTarget({ server: 'https://127.0.0.1:9443/', caFingerprint: colons }, env)).toEqual({
      server: 'https://127.0.0.1:9443',
      caFingerprint: FINGERPRINT,
      token: 'secret-token-1',
    });
    // an empty or blank variable counts as not set
    expect(usage(() => resolveServerTarget({}, { ...env, ATTESTOR_SERVER: '  ' }))).toMatch(/--server URL or set ATTESTOR_SERVER/);
  });

  it('names the flag and the variable of whatever is missing or malformed', () => {
    expect(usage(() => resolveServerTarget({}, { ...env, ATTESTOR_SERVER: undefined }))).toBe('no server: give --server URL or set ATTESTOR_SERVER');
    expect(usage(() => resolveServerTarget({}, { ...env, ATTESTOR_CA_FINGERPRINT: undefined }))).toBe(
      'no CA fingerprint: give --ca-fingerprint HEX or set ATTESTOR_CA_FINGERPRINT',
    );
    expect(usage(() => resolveServerTarget({}, { ...env, ATTESTOR_TOKEN: undefined }))).toMatch(/^ATTESTOR_TOKEN is not set/);
    expect(usage(() => resolveServerTarget({ server: 'http://verifier.example' }, env))).toBe('--server / ATTESTOR_SERVER: must be an https:// URL (got http:)');
    expect(usage(() => resolveServerTarget({ server: 'verifier.example' }, env))).toBe('--server / ATTESTOR_SERVER: not a URL');
    for (const server of ['https://verifier.example/api', 'https://verifier.example/?x=1', 'https://user:pw@verifier.example']) {
      expect(usage(() => resolveServerTarget({ server }, env))).toMatch(/^--server \/ ATTESTOR_SERVER: must be https:\/\/host\[:port\] alone/);
    }
    for (const caFingerprint of ['ab'.repeat(31), `${'ab'.repeat(31)}zz`, 'ab'.repeat(33)]) {
      expect(usage(() => resolveServerTarget({ caFingerprint }, env))).toMatch(/^--ca-fingerprint \/ ATTESTOR_CA_FINGERPRINT: must be 64 hex digits/);
    }
  });

  it('refuses a token that cannot go into a header, without showing it', () => {
    for (const token of ['abc def', 'abc\r\nX-Injected: 1', 'tökén']) {
      const message = usage(() => resolveServerTarget({}, { ...env, ATTESTOR_TOKEN: token }));
      expect(message).toBe('ATTESTOR_TOKEN holds characters no API token has');
    }
  });

  it("prints a server's refusal with the server's code", () => {
    expect(describeError(new ApiError(403, 'ERR_FORBIDDEN', { detail: 'the token lacks baselines:write' }))).toBe(
      'error: ERR_FORBIDDEN: the token lacks baselines:write\n',
    );
    expect(describeError(new ApiError(502, 'HTTP_502', {}))).toBe('error: HTTP_502: HTTP 502\n');
  });
});

describe('operator commands: usage errors (exit 2) before any request', () => {
  let dir = '';
  beforeAll(() => void (dir = mkdtempSync(join(tmpdir(), 'attestor-opcli-'))));
  afterAll(() => void (dir && rmSync(dir, { recursive: true, force: true })));
  const server = ['--server', 'https://127.0.0.1:9', '--ca-fingerprint', FINGERPRINT];

  beforeEach(() => {
    vi.stubEnv('ATTESTOR_SERVER', undefined);
    vi.stubEnv('ATTESTOR_CA_FINGERPRINT', undefined);
    vi.stubEnv('ATTESTOR_TOKEN', 'secret-token-2');
  });
  afterEach(() => vi.unstubAllEnvs());

  it('a missing server, fingerprint or token is named', async () => {
    const noServer = await attestor(['baseline', 'list', '--ca-fingerprint', FINGERPRINT]);
    expect(noServer).toEqual({ code: 2, out: '', err: 'error: no server: give --server URL or set ATTESTOR_SERVER\n' });
    const noFingerprint = await attestor(['agent', 'list', '--server', 'https://127.0.0.1:9']);
    expect(noFingerprint.code).toBe(2);
    expect(noFingerprint.err).toBe('error: no CA fingerprint: give --ca-fingerprint HEX or set ATTESTOR_CA_FINGERPRINT\n');
    vi.stubEnv('ATTESTOR_TOKEN', undefined);
    const noToken = await attestor(['agent', 'show', AGENT, ...server]);
    expect(noToken.code).toBe(2);
    expect(noToken.err).toMatch(/^error: ATTESTOR_TOKEN is not set/);
  });

  it('the help says why the token has no flag', async () => {
    const help = await attestor(['baseline', 'enforce', '--help']);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/ATTESTOR_TOKEN +the operator API token \(required\)\. There is no flag for it on\s+purpose: a flag would show in ps and in shell history\./);
    expect(help.out).toMatch(/--ca-fingerprint <hex>/);
  });

  it('ids are checked before they reach a URL path', async () => {
    for (const args of [
      ['baseline', 'show', '../tokens'],
      ['baseline', 'enforce', 'not-a-uuid'],
      ['baseline', 'retire', `${UUID_1}/../../tokens`],
      ['agent', 'show', '..'],
      ['agent', 'show', AGENT.toUpperCase()],
      ['baseline', 'capture', '--agent', 'xyz'],
    ]) {
      const r = await attestor([...args, ...server]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err).toMatch(/is invalid|must be/);
    }
  });

  it('options are checked: --status, --limit, --name, --selector, --audience, required ones', async () => {
    const cases: [string[], RegExp][] = [
      [['baseline', 'list', '--status', 'active'], /--status/],
      [['agent', 'list', '--limit', '0'], /must be a positive integer/],
      [['agent', 'list', '--limit', 'ten'], /must be a positive integer/],
      [['baseline', 'add', join(dir, 'none.json')], /required option '--name <name>'/],
      [['baseline', 'add', join(dir, 'none.json'), '--name', 'a b'], /baseline names are/],
      [['baseline', 'capture'], /required option '--agent <id>'/],
      [['baseline', 'capture', '--agent', AGENT, '--selector', 'role'], /must be NAME=VALUE/],
      [['baseline', 'capture', '--agent', AGENT, '--selector', 'Role=x'], /label names are lowercase/],
      [['baseline', 'capture', '--agent', AGENT, '--selector', 'a=1', '--selector', 'a=2'], /label "a" is given twice/],
      [['baseline', 'capture', '--agent', AGENT, '--audience', 'has space'], /no whitespace/],
      [['baseline', 'add', join(dir, 'none.json'), '--name', 'n'], /cannot read FILE .*none\.json: ENOENT/],
    ];
    for (const [args, message] of cases) {
      const r = await attestor([...args, ...server]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err, args.join(' ')).toMatch(message);
    }
  });

  it('a baseline file that is not a JSON object is ERR_BASELINE_INVALID (exit 1)', async () => {
    for (const [name, content] of [
      ['not-json.json', '{"pcrs": '],
      ['array.json', '[1, 2]'],
      ['latin1.json', Buffer.from([0x7b, 0x22, 0xe9, 0x22, 0x3a, 0x31, 0x7d])],
    ] as const) {
      writeFileSync(join(dir, name), content);
      const r = await attestor(['baseline', 'add', join(dir, name), '--name', 'golden', ...server]);
      expect(r.code, name).toBe(1);
      expect(r.err, name).toMatch(/^error: ERR_BASELINE_INVALID: /);
    }
  });
});

/** A baseline document the verifier accepts: one allowed SHA-256 value for PCR 0. */
const GOLDEN = { version: 1, pcrs: { sha256: { '0': ['00'.repeat(32)] } } };

/** The column a header starts at; every row of an aligned table has its cell there. */
function columnsAligned(table: string, header: string, cells: (line: string) => string | undefined): void {
  const lines = table.trimEnd().split('\n');
  const at = lines[0]?.indexOf(header) ?? -1;
  expect(at, table).toBeGreaterThanOrEqual(0);
  for (const line of lines.slice(1)) {
    const cell = cells(line);
    if (cell !== undefined) expect(line.indexOf(cell), line).toBe(at);
  }
}

describe.each(['sqlite', 'postgres'] as const)('operator commands against the real verifier (%s store)', (store) => {
  let v: TestVerifier;
  let sw: Swtpm;
  let dir = '';
  let stateDir = '';
  const tokens: Record<'admin' | 'operator' | 'auditor' | 'relying-party', string> = { admin: '', operator: '', auditor: '', 'relying-party': '' };
  /** Agents put straight into the verifier's store (list paging, reason display); the swtpm agent enrolls for real. */
  const seeded: string[] = [];
  let realAgent = '';

  /** Runs `attestor ARGS` with the operator token of `role` in ATTESTOR_TOKEN. */
  const as = (role: keyof typeof tokens, args: string[]) => {
    vi.stubEnv('ATTESTOR_TOKEN', tokens[role]);
    return attestor(args);
  };
  const op = (args: string[]) => as('operator', args);
  const json = <T>(r: { code: number; out: string; err: string }, parse: (v: unknown) => T): T => {
    expect(r.code, r.err).toBe(0);
    expect(r.out.trimEnd().split('\n'), 'exactly one JSON line').toHaveLength(1);
    return parse(JSON.parse(r.out));
  };
  const docFile = (name: string, document: unknown) => {
    const file = join(dir, name);
    writeFileSync(file, JSON.stringify(document));
    return file;
  };
  const agentStep = async (args: string[]) => runCli(runAgent, [...args, '--tcti', sw.tcti, '--state-dir', stateDir]);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'attestor-opcli-'));
    stateDir = join(dir, 'agent');
    sw = await startSwtpm();
    v = await startTestVerifier({ store, ekRootPems: [sw.rootCaCertPem, sw.caCertPem] });
    tokens.admin = v.adminToken;
    const client = createApiClient({ server: v.url, caPem: await bootstrapCa(v.url, v.caFingerprint), token: v.adminToken });
    try {
      for (const role of ['operator', 'auditor', 'relying-party'] as const) {
        tokens[role] = (await client.call('POST', '/v1/tokens', TokenCreateResponse, { role, label: `operator-cli ${role}` })).token;
      }
    } finally {
      client.close();
    }
    const enrolled = await agentStep(['enroll', '--server', v.url, '--ca-fingerprint', v.caFingerprint, '--label', 'role=gpu-node']);
    expect(enrolled.code, enrolled.err).toBe(0);
    realAgent = /agent id +([0-9a-f]{64})/.exec(enrolled.out)?.[1] ?? '';
    expect(realAgent).toMatch(/^[0-9a-f]{64}$/);
    for (let i = 0; i < 3; i++) {
      const id = randomBytes(32).toString('hex');
      await v.verifier.store.agents.activate(
        { id, ekPublic: randomBytes(64), akPublic: randomBytes(64), ekCertificate: null, labels: { seeded: String(i) }, createdAt: Date.now() },
        { actor: 'system', action: 'agent.activate', subject: id, details: {} },
      );
      seeded.push(id);
    }
  });

  afterAll(async () => {
    await v?.stop();
    await sw?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    vi.stubEnv('ATTESTOR_SERVER', v.url);
    vi.stubEnv('ATTESTOR_CA_FINGERPRINT', v.caFingerprint);
  });
  afterEach(() => vi.unstubAllEnvs());

  it('baseline add, show, enforce, retire: tables, --json, and the state machine', async () => {
    const file = docFile('golden.json', GOLDEN);
    const added = await op(['baseline', 'add', file, '--name', 'golden']);
    expect(added.code, added.err).toBe(0);
    expect(added.err).toBe('');
    const id = /^id +([0-9a-f-]{36})$/m.exec(added.out)?.[1] ?? '';
    expect(added.out).toMatch(/^name +golden$/m);
    expect(added.out).toMatch(/^status +staged$/m);
    expect(added.out).toMatch(/^created +\S+ by token:[0-9a-f-]{36}$/m);
    expect(added.out).toMatch(/^enforced +-$/m);
    // the field names are one column: every value starts where the widest name's does
    expect(new Set(added.out.trimEnd().split('\n').map((line) => /^\S+(?: \S+)* {2,}/.exec(line)?.[0].length)).size).toBe(1);

    const v2 = json(await op(['baseline', 'add', file, '--name', 'golden', '--json']), BaselineBody.parse);
    expect(v2).toMatchObject({ name: 'golden', version: 2, status: 'staged', enforcedAt: null });

    const shown = json(await op(['baseline', 'show', id, '--json']), BaselineBody.parse);
    expect(shown).toMatchObject({ id, version: 1, document: { version: 1, pcrs: GOLDEN.pcrs } });
    const shownText = await as('auditor', ['baseline', 'show', id]);
    expect(shownText.code, shownText.err).toBe(0);
    expect(shownText.out).toContain(`document:\n  {\n    "version": 1,\n`);
    expect(shownText.out).toContain(`"${'00'.repeat(32)}"`);

    const enforced = json(await op(['baseline', 'enforce', id, '--json']), BaselineBody.parse);
    expect(enforced).toMatchObject({ id, status: 'enforced' });
    expect(enforced.enforcedAt).not.toBeNull();
    // enforcing version 2 retires version 1, the enforced baseline of the same name
    const enforcedText = await op(['baseline', 'enforce', v2.id]);
    expect(enforcedText.code, enforcedText.err).toBe(0);
    expect(enforcedText.out).toMatch(/^status +enforced$/m);
    expect(json(await op(['baseline', 'show', id, '--json']), BaselineBody.parse).status).toBe('retired');

    const retired = json(await op(['baseline', 'retire', v2.id, '--json']), BaselineBody.parse);
    expect(retired).toMatchObject({ id: v2.id, status: 'retired' });
    expect(retired.retiredAt).not.toBeNull();
    for (const action of ['retire', 'enforce']) {
      const again = await op(['baseline', action, v2.id]);
      expect(again.code).toBe(1);
      expect(again.out).toBe('');
      expect(again.err).toMatch(/^error: ERR_BASELINE_STATE: .+\n$/);
    }
    const unknown = await op(['baseline', 'show', randomUUID()]);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toMatch(/^error: ERR_BASELINE_NOT_FOUND: /);

    const list = await op(['baseline', 'list', '--status', 'retired']);
    expect(list.code, list.err).toBe(0);
    expect(list.out.split('\n')[0]).toMatch(/^ID +NAME +VERSION +STATUS +CREATED +ENFORCED$/);
    for (const b of [id, v2.id]) expect(list.out).toMatch(new RegExp(`^${b} +golden +[12] +retired +\\S+ +\\S+$`, 'm'));
    columnsAligned(list.out, 'NAME', (line) => (line.includes('golden') ? 'golden' : undefined));
    columnsAligned(list.out, 'STATUS', () => 'retired');
    const staged = json(await op(['baseline', 'list', '--status', 'staged', '--json']), pageOf(BaselineBody).parse);
    expect(staged.items.map((b) => b.id)).not.toContain(id);
  });

  it('baseline add - reads the document from standard input (the built bin)', async () => {
    // Spawned asynchronously: the verifier runs in this process and must go on answering.
    const child = spawn(process.execPath, ['dist/cli/attestor.js', 'baseline', 'add', '-', '--name', 'from-stdin', '--json'], {
      env: { ...process.env, ATTESTOR_SERVER: v.url, ATTESTOR_CA_FINGERPRINT: v.caFingerprint, ATTESTOR_TOKEN: tokens.operator },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.stdin.end(JSON.stringify(GOLDEN));
    const code = await new Promise((resolve) => child.on('close', resolve));
    expect(code, stderr).toBe(0);
    expect(BaselineBody.parse(JSON.parse(stdout))).toMatchObject({ name: 'from-stdin', status: 'staged', document: { pcrs: GOLDEN.pcrs } });
  });

  it('an invalid baseline document is refused by the server with ERR_BASELINE_INVALID', async () => {
    for (const [name, document, detail] of [
      ['checks-nothing.json', { version: 1 }, /checks nothing/],
      ['typo.json', { ...GOLDEN, pcr: {} }, /unknown field "pcr"/],
      ['short-digest.json', { version: 1, pcrs: { sha256: { '7': ['abcd'] } } }, /pcrs\.sha256\.7\[0\]: must be 64 hex digits/],
    ] as const) {
      const r = await op(['baseline', 'add', docFile(name, document), '--name', 'invalid']);
      expect(r.code, name).toBe(1);
      expect(r.out).toBe('');
      expect(r.err, name).toMatch(/^error: ERR_BASELINE_INVALID: baseline document: .+\n$/);
      expect(r.err, name).toMatch(detail);
    }
    const none = json(await op(['baseline', 'list', '--all', '--json']), pageOf(BaselineBody).parse);
    expect(none.items.filter((b) => b.name === 'invalid')).toEqual([]);
  });

  it('baseline list pages: --limit, --after CURSOR, --all', async () => {
    for (let i = 0; i < 5; i++) expect((await op(['baseline', 'add', docFile('page.json', GOLDEN), '--name', `page-${i}`])).code).toBe(0);
    const everything = json(await op(['baseline', 'list', '--limit', '500', '--json']), pageOf(BaselineBody).parse);
    expect(everything.next).toBeNull();
    expect(everything.items.length).toBeGreaterThanOrEqual(5);

    const walked: string[] = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const page: { items: BaselineBody[]; next: string | null } = json(await op(['baseline', 'list', '--limit', '2', '--json', ...(after ? ['--after', after] : [])]), pageOf(BaselineBody).parse);
      expect(page.items.length).toBeLessThanOrEqual(2);
      walked.push(...page.items.map((b) => b.id));
      after = page.next;
      pages++;
    } while (after !== null);
    expect(pages).toBeGreaterThanOrEqual(Math.ceil(everything.items.length / 2));
    expect(walked).toEqual(everything.items.map((b) => b.id));

    const all = json(await op(['baseline', 'list', '--limit', '2', '--all', '--json']), pageOf(BaselineBody).parse);
    expect(all).toEqual(everything);

    const firstPage = await op(['baseline', 'list', '--limit', '2']);
    expect(firstPage.code, firstPage.err).toBe(0);
    expect(firstPage.out.trimEnd().split('\n')).toHaveLength(3);
    expect(firstPage.err).toMatch(/^more: --after \S+ for the next page, or --all\n$/);
    const allText = await op(['baseline', 'list', '--limit', '2', '--all']);
    expect(allText.err).toBe('');
    expect(allText.out.trimEnd().split('\n')).toHaveLength(everything.items.length + 1);
  });

  it('a wrong or missing token is ERR_UNAUTHENTICATED, a role without the scope ERR_FORBIDDEN', async () => {
    vi.stubEnv('ATTESTOR_TOKEN', randomBytes(32).toString('base64url'));
    for (const args of [['baseline', 'list'], ['agent', 'show', realAgent], ['baseline', 'enforce', randomUUID()]]) {
      const r = await attestor(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.err).toMatch(/^error: ERR_UNAUTHENTICATED: /);
    }
    const file = docFile('forbidden.json', GOLDEN);
    for (const [role, args] of [
      ['auditor', ['baseline', 'add', file, '--name', 'forbidden']],
      ['auditor', ['baseline', 'capture', '--agent', realAgent]],
      ['relying-party', ['baseline', 'list']],
      ['relying-party', ['agent', 'list']],
    ] as const) {
      const r = await as(role, [...args]);
      expect(r.code, `${role} ${args.join(' ')}`).toBe(1);
      expect(r.out).toBe('');
      expect(r.err).toMatch(/^error: ERR_FORBIDDEN: /);
      expect(r.err).not.toContain(tokens[role]);
    }
    // what the auditor may do
    expect((await as('auditor', ['agent', 'list'])).code).toBe(0);
    expect((await as('auditor', ['baseline', 'list'])).code).toBe(0);
  });

  it('a CA fingerprint the server has no root for is ERR_SERVER_UNTRUSTED, and nothing is sent', async () => {
    const other = randomBytes(32).toString('hex');
    const r = await op(['baseline', 'add', docFile('untrusted.json', GOLDEN), '--name', 'untrusted', '--ca-fingerprint', other]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(new RegExp(`^error: ERR_SERVER_UNTRUSTED: the server has no root CA with fingerprint ${other}`));
    const list = json(await op(['baseline', 'list', '--all', '--json']), pageOf(BaselineBody).parse);
    expect(list.items.map((b) => b.name)).not.toContain('untrusted');
  });

  it('agent list and show: table, --json, pages, and the last verdict reasons one a line', async () => {
    const [withVerdict] = seeded as [string];
    await v.verifier.store.attestations.record({
      verdict: {
        id: randomUUID(),
        agentId: withVerdict,
        at: Date.now(),
        status: 'contraindicated',
        baselineId: null,
        baselineVersion: null,
        reasons: [
          { code: 'PCR_VALUE_NOT_ALLOWED', message: 'PCR 7 is not an allowed value', bank: 'sha256', pcr: 7 },
          { code: 'ERR_IMA_FILE_NOT_ALLOWED', message: 'the path is not in the allowlist', path: '/tmp/\x1b[2Jx', event: 12 },
        ],
        claims: {},
      },
      credentials: [],
      clock: null,
      evidence: null,
      audit: [{ actor: 'system', action: 'attestation.verdict', subject: withVerdict, details: {} }],
    });

    const detail = json(await op(['agent', 'show', withVerdict, '--json']), AgentDetailBody.parse);
    expect(detail).toMatchObject({ id: withVerdict, status: 'active', labels: { seeded: '0' }, credentials: [], lastVerdict: { status: 'contraindicated' } });
    const shown = await as('auditor', ['agent', 'show', withVerdict]);
    expect(shown.code, shown.err).toBe(0);
    expect(shown.out).toMatch(/^status +active$/m);
    expect(shown.out).toMatch(/^labels +seeded=0$/m);
    expect(shown.out).toMatch(/^verdict +contraindicated at \S+, no baseline$/m);
    const reasons = shown.out.slice(shown.out.indexOf('reasons:\n') + 'reasons:\n'.length, shown.out.indexOf('credentials:\n')).split('\n');
    expect(reasons).toEqual([
      '  PCR_VALUE_NOT_ALLOWED     PCR 7 is not an allowed value (sha256 PCR 7)',
      '  ERR_IMA_FILE_NOT_ALLOWED  the path is not in the allowlist (event 12, path /tmp/\\x1b[2Jx)',
      '',
    ]);
    expect(shown.out).toMatch(/credentials:\n {2}none\n$/);
    expect(shown.out).not.toContain('\x1b');

    const agents = json(await op(['agent', 'list', '--json']), pageOf(AgentBody).parse);
    expect(agents.next).toBeNull();
    expect(agents.items.map((a) => a.id).sort()).toEqual([realAgent, ...seeded].sort());
    const paged = json(await op(['agent', 'list', '--limit', '1', '--all', '--json']), pageOf(AgentBody).parse);
    expect(paged).toEqual(agents);
    const first = json(await op(['agent', 'list', '--limit', '3', '--json']), pageOf(AgentBody).parse);
    expect(first.items).toEqual(agents.items.slice(0, 3));
    const rest = json(await op(['agent', 'list', '--limit', '3', '--after', first.next ?? '', '--json']), pageOf(AgentBody).parse);
    expect(rest).toEqual({ items: agents.items.slice(3), next: null });

    const table = await op(['agent', 'list']);
    expect(table.code, table.err).toBe(0);
    expect(table.out.split('\n')[0]).toMatch(/^ID +STATUS +VERDICT +LAST ATTESTED +LABELS$/);
    expect(table.out).toMatch(new RegExp(`^${withVerdict} +active +contraindicated +\\S+ +seeded=0$`, 'm'));
    expect(table.out).toMatch(new RegExp(`^${seeded[1]} +active +- +- +seeded=1$`, 'm'));
    columnsAligned(table.out, 'VERDICT', (line) => /contraindicated|affirming|warning/.exec(line)?.[0]);
    columnsAligned(table.out, 'LABELS', (line) => /(seeded|role)=\S+/.exec(line)?.[0]);

    const unknown = await op(['agent', 'show', 'ee'.repeat(32)]);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toMatch(/^error: ERR_AGENT_NOT_FOUND: /);
  });

  it("baseline capture stages a baseline from the swtpm agent's evidence; enforced, it affirms; a changed PCR is reported", async () => {
    const noEvidence = await op(['baseline', 'capture', '--agent', seeded[2] ?? '']);
    expect(noEvidence.code).toBe(1);
    expect(noEvidence.err).toMatch(/^error: ERR_NO_EVIDENCE: /);
    const unknown = await op(['baseline', 'capture', '--agent', 'ee'.repeat(32)]);
    expect(unknown.err).toMatch(/^error: ERR_AGENT_NOT_FOUND: /);

    // No enforced baseline applies yet (the first test retires what it enforced): the evidence is verified and kept, no credentials.
    const first = await agentStep(['attest', '--no-event-log', '--no-ima-log']);
    expect(first.code).toBe(1);
    expect(first.err).toMatch(/ERR_NO_BASELINE/);

    const captured = json(
      await op(['baseline', 'capture', '--agent', realAgent, '--name', 'gpu-node', '--selector', 'role=gpu-node', '--audience', 'spiffe://example.org/svc', '--json']),
      BaselineBody.parse,
    );
    expect(captured).toMatchObject({ name: 'gpu-node', status: 'staged', document: { selector: { labels: { 'role': 'gpu-node' } }, audiences: ['spiffe://example.org/svc'] } });
    const capturedText = await op(['baseline', 'capture', '--agent', realAgent]);
    expect(capturedText.code, capturedText.err).toBe(0);
    expect(capturedText.out).toMatch(new RegExp(`^name +captured-${realAgent.slice(0, 12)}$`, 'm'));
    expect(capturedText.out).toMatch(/^status +staged$/m);

    expect((await op(['baseline', 'enforce', captured.id])).code).toBe(0);
    const affirmed = await agentStep(['attest', '--no-event-log', '--no-ima-log']);
    expect(affirmed.code, affirmed.err).toBe(0);
    const healthy = json(await op(['agent', 'show', realAgent, '--json']), AgentDetailBody.parse);
    expect(healthy.lastVerdict).toMatchObject({ status: 'affirming', baseline: { id: captured.id, version: 1 } });
    expect(healthy.credentials.map((c) => c.kind)).toContain('x509-svid');
    const healthyText = await op(['agent', 'show', realAgent]);
    expect(healthyText.out).toMatch(new RegExp(`^verdict +affirming at \\S+, baseline ${captured.id} v1$`, 'm'));
    expect(healthyText.out).toMatch(/^credentials:\n {2}ID +KIND +ISSUED +EXPIRES +REVOKED\n {2}[0-9a-f]+ +x509-svid +\S+ +\S+ +-$/m);

    // A PCR of the baseline changes: the next attestation is contraindicated, and says which.
    await tpm2(sw, ['tpm2_pcrextend', `1:sha256=${'11'.repeat(32)}`]);
    const refused = await agentStep(['attest', '--no-event-log', '--no-ima-log']);
    expect(refused.code).toBe(1);
    const after = json(await op(['agent', 'show', realAgent, '--json']), AgentDetailBody.parse);
    expect(after.lastVerdict?.status).toBe('contraindicated');
    const reasons = after.lastVerdict?.reasons ?? [];
    expect(reasons.length).toBeGreaterThan(0);
    const text = await op(['agent', 'show', realAgent]);
    const lines = text.out.slice(text.out.indexOf('reasons:\n') + 'reasons:\n'.length, text.out.indexOf('credentials:\n')).trimEnd().split('\n');
    expect(lines).toHaveLength(reasons.length);
    reasons.forEach((r, i) => expect(lines[i]).toMatch(new RegExp(`^ {2}${r.code} +`)));
    expect(text.out).toMatch(/PCR 1\b/);
  });
});
