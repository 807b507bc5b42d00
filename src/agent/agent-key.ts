import { Pkcs11Session } from '../pkcs11/module.js';
import { formatPkcs11Uri, parsePkcs11Uri, readPkcs11Pin, type Pkcs11Uri } from '../pkcs11/uri.js';
import { findOrGenerateKey, type Pkcs11Key } from './pkcs11-key.js';

/*
 * The key the agent's credentials are issued to (`--key tpm|pkcs11:URI`): the TPM identity key
 * (TpmSession.identityKey, certified by the AK), or a P-256 key in a PKCS#11 token, generated
 * there on first use and found again by its label.
 */

/** CKA_LABEL of the agent's token key when the URI names no `object`. */
export const DEFAULT_PKCS11_KEY_LABEL = 'attestor-agent';
/** Where the token's user PIN comes from when the URI has no pin-source. */
export const PKCS11_PIN_ENV = 'ATTESTOR_AGENT_PKCS11_PIN';

export type AgentKeySpec = { readonly kind: 'tpm' } | { readonly kind: 'pkcs11'; readonly uri: Pkcs11Uri };

export type AgentKey =
  | { readonly kind: 'tpm' }
  | {
      readonly kind: 'pkcs11';
      readonly session: Pkcs11Session;
      readonly key: Pkcs11Key;
      /** The key's URI with `object=` its label, without any PIN: what key.uri holds. */
      readonly uri: string;
    };

/** `tpm`, or a PKCS#11 URI (src/pkcs11/uri.ts); anything else is ERR_KEYS_URI. */
export function parseAgentKeySpec(value: string): AgentKeySpec {
  if (value === 'tpm') return { kind: 'tpm' };
  return { kind: 'pkcs11', uri: parsePkcs11Uri(value, '--key') };
}

/**
 * Opens the key: for PKCS#11, logs in to the token (PIN from the URI's pin-source, else
 * ATTESTOR_AGENT_PKCS11_PIN) and finds or generates the key. Close it with closeAgentKey.
 */
export async function openAgentKey(spec: AgentKeySpec, env: NodeJS.ProcessEnv = process.env): Promise<AgentKey> {
  if (spec.kind === 'tpm') return spec;
  const { uri } = spec;
  const label = uri.object ?? DEFAULT_PKCS11_KEY_LABEL;
  const session = await Pkcs11Session.open({ modulePath: uri.modulePath, tokenLabel: uri.token, pin: readPkcs11Pin(uri, PKCS11_PIN_ENV, env) });
  try {
    return { kind: 'pkcs11', session, key: await findOrGenerateKey(session, label), uri: formatPkcs11Uri(uri, label) };
  } catch (e) {
    await session.close().catch(() => undefined);
    throw e;
  }
}

export async function closeAgentKey(key: AgentKey): Promise<void> {
  if (key.kind === 'pkcs11') await key.session.close();
}
