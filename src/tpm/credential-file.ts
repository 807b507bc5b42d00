import { ParseError } from '../errors.js';
import type { MadeCredential } from './make-credential.js';
import { TpmReader } from './reader.js';
import { TpmWriter } from './writer.js';

/**
 * The credential file of tpm2-tools (written by `tpm2_makecredential -o`, read by
 * `tpm2_activatecredential -i`): in this form a credential Attestor made activates with the
 * stock tools, which is how it is checked against real TPMs. UINT32 magic 0xBADCC0DE, UINT32 version 1, then TPM2B_ID_OBJECT and
 * TPM2B_ENCRYPTED_SECRET, all big-endian.
 */
const MAGIC = 0xbadcc0de;
const VERSION = 1;

export function encodeCredentialFile(cred: MadeCredential): Uint8Array {
  return new TpmWriter().u32(MAGIC).u32(VERSION).bytes(cred.credentialBlob).bytes(cred.encryptedSecret).finish();
}

export function parseCredentialFile(bytes: Uint8Array): MadeCredential {
  const r = new TpmReader(bytes, 'credential file');
  const magic = r.u32('magic');
  if (magic !== MAGIC) throw new ParseError('ERR_TPM_BAD_VALUE', `credential file: magic 0x${magic.toString(16)} is not 0xbadcc0de`);
  const version = r.u32('version');
  if (version !== VERSION) throw new ParseError('ERR_TPM_BAD_VALUE', `credential file: version ${version} is not ${VERSION}`);
  const credentialBlob = marshalled2b(r, 'credentialBlob');
  const encryptedSecret = marshalled2b(r, 'encryptedSecret');
  r.end();
  return { credentialBlob, encryptedSecret };
}

/** One TPM2B, returned with its size prefix (the form MadeCredential carries). */
function marshalled2b(r: TpmReader, field: string): Uint8Array {
  const start = r.position;
  r.tpm2b(field);
  return r.slice(start);
}
