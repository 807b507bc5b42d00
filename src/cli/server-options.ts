import { InvalidArgumentError, type Command } from 'commander';
import type { z } from 'zod';
import { bootstrapCa, createApiClient, type ApiClient } from '../client/api-client.js';
import { UsageError } from './io.js';

/*
 * What every operator command that talks to the verifier shares: the server URL and the
 * fingerprint of its root CA (flags, or ATTESTOR_SERVER / ATTESTOR_CA_FINGERPRINT), and the
 * operator token, which is taken from ATTESTOR_TOKEN only: a flag would show in `ps` and in
 * shell history. The root CA is pinned as `step ca bootstrap` does (src/client/api-client.ts).
 */

export interface ServerFlags {
  server?: string;
  caFingerprint?: string;
}

export interface ServerTarget {
  /** https://host[:port] */
  readonly server: string;
  /** SHA-256 of the root CA's DER, 64 lowercase hex digits. */
  readonly caFingerprint: string;
  readonly token: string;
}

const TOKEN_HELP = `
Environment:
  ATTESTOR_SERVER          default of --server
  ATTESTOR_CA_FINGERPRINT  default of --ca-fingerprint
  ATTESTOR_TOKEN           the operator API token (required). There is no flag for it on
                           purpose: a flag would show in ps and in shell history.
`;

/** Adds --server and --ca-fingerprint, and the environment the command reads to its help. */
export function addServerOptions(cmd: Command): Command {
  return cmd
    .option('--server <url>', 'the verifier, https://host[:port] (env ATTESTOR_SERVER)')
    .option('--ca-fingerprint <hex>', "SHA-256 of the verifier's root CA certificate (DER), as `attestor serve` printed it (env ATTESTOR_CA_FINGERPRINT)")
    .addHelpText('after', TOKEN_HELP);
}

/** `parse(value)` (one of the agent's option parsers, so both commands accept the same), its refusal a UsageError naming `what`. */
function checkedAs(parse: (value: string) => string, value: string, what: string): string {
  try {
    return parse(value);
  } catch (e) {
    if (e instanceof InvalidArgumentError) throw new UsageError(`${what}: ${e.message}`);
    throw e;
  }
}

/** An environment variable that is set to something, or undefined. */
function fromEnv(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

/**
 * The server, its CA fingerprint and the token, flags before environment. Anything missing or
 * malformed is a UsageError naming the flag and the variable; the token's value never appears
 * in a message.
 */
export function resolveServerTarget(flags: ServerFlags, env: NodeJS.ProcessEnv): ServerTarget {
  const server = flags.server ?? fromEnv(env, 'ATTESTOR_SERVER');
  if (server === undefined) throw new UsageError('no server: give --server URL or set ATTESTOR_SERVER');
  const fingerprint = flags.caFingerprint ?? fromEnv(env, 'ATTESTOR_CA_FINGERPRINT');
  if (fingerprint === undefined) throw new UsageError('no CA fingerprint: give --ca-fingerprint HEX or set ATTESTOR_CA_FINGERPRINT');
  const origin = checkedAs(serverUrl, server, '--server / ATTESTOR_SERVER');
  const pinned = checkedAs(caFingerprint, fingerprint, '--ca-fingerprint / ATTESTOR_CA_FINGERPRINT');

  const token = fromEnv(env, 'ATTESTOR_TOKEN');
  if (token === undefined) throw new UsageError('ATTESTOR_TOKEN is not set: operator commands read the API token from the environment only');
  // It goes into a header: anything but visible ASCII would be refused there, or worse, split it.
  if (!/^[\x21-\x7e]+$/.test(token)) throw new UsageError('ATTESTOR_TOKEN holds characters no API token has');

  return { server: origin, caFingerprint: pinned, token };
}

/**
 * Resolves the target, pins the server's root CA, and runs `use` with a client that sends the
 * token; the connections are closed afterwards. A refusal by the server rejects with the
 * client's ApiError, which the program prints with the server's code.
 */
export async function withServer<T>(flags: ServerFlags, use: (client: ApiClient) => Promise<T>, env: NodeJS.ProcessEnv = process.env): Promise<T> {
  const target = resolveServerTarget(flags, env);
  const caPem = await bootstrapCa(target.server, target.caFingerprint);
  const client = createApiClient({ server: target.server, caPem, token: target.token });
  try {
    return await use(client);
  } finally {
    client.close();
  }
}

/**
 * A commander parser that checks a value as the wire schema will (an id that ends up in a URL
 * path must be exactly an id: `../tokens` would name another route).
 */
export function checkedBy<S extends z.ZodType>(schema: S): (value: unknown) => z.output<S> {
  return (value) => {
    const parsed = schema.safeParse(value);
    if (!parsed.success) throw new InvalidArgumentError(innermostMessage(parsed.error.issues));
    return parsed.data;
  };
}

/** The message of the first issue, from inside a record key or list item where it has one. */
function innermostMessage(issues: readonly z.core.$ZodIssue[]): string {
  const first = issues[0];
  if (first === undefined) return 'invalid';
  return 'issues' in first && first.issues.length > 0 ? innermostMessage(first.issues) : first.message;
}

/** https://host[:port] alone: requests resolve /v1/... against it, so a path or query would be dropped silently. */
export function serverUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError('not a URL');
  }
  if (url.protocol !== 'https:') throw new InvalidArgumentError(`must be an https:// URL (got ${url.protocol})`);
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new InvalidArgumentError('must be https://host[:port] alone (no path, query or credentials)');
  }
  return url.origin;
}

/** 64 hex digits, colons allowed; lowercase without colons, as agent.json keeps it. */
export function caFingerprint(value: string): string {
  const fingerprint = value.toLowerCase().replace(/:/g, '');
  if (!/^[0-9a-f]{64}$/.test(fingerprint)) {
    throw new InvalidArgumentError('must be 64 hex digits (SHA-256 of the root CA certificate DER; colons allowed)');
  }
  return fingerprint;
}
