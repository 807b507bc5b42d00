import type { ApiClient } from '../client/api-client.js';
import { AttestorError } from '../errors.js';
import { ActivationResponse, EnrollmentResponse, type EnrollmentRequest } from '../wire/schemas.js';
import { agentIdOf } from '../tpm/agent-id.js';
import type { TpmSession } from './tpm-session.js';

/*
 * DESIGN flow 1 from the agent's side: the verifier checks the EK (certificate) and the AK's
 * attributes and answers with a MakeCredential for the EK and the AK's Name; only this TPM can
 * activate it, and only for this AK, so returning the secret proves both live in one TPM.
 */

export interface EnrollOptions {
  readonly client: ApiClient;
  readonly session: TpmSession;
  /** Host labels baselines select on (`role=gpu-node`). */
  readonly labels?: { readonly [name: string]: string };
}

export interface Enrollment {
  readonly agentId: string;
  readonly spiffeId: string;
}

/**
 * Enrolls the session's TPM: sends EK public, EK certificate and AK public, activates the
 * credential the verifier returns and sends the secret back. The agent id the verifier names
 * must be this EK's (ERR_SERVER_RESPONSE otherwise). The secret's buffer is zeroed once sent;
 * it never appears in an error or log.
 */
export async function enrollAgent(opts: EnrollOptions): Promise<Enrollment> {
  const { client, session } = opts;
  const expected = agentIdOf(session.ek.public);
  const request: EnrollmentRequest = {
    ekPublic: session.ek.public,
    ...(session.ek.certificate ? { ekCertificate: session.ek.certificate } : {}),
    akPublic: session.ak.public,
    ...(opts.labels && Object.keys(opts.labels).length > 0 ? { labels: { ...opts.labels } } : {}),
  };
  const enrollment = await client.call('POST', '/v1/enrollments', EnrollmentResponse, request);
  if (enrollment.agentId !== expected) {
    throw new AttestorError(
      'ERR_SERVER_RESPONSE',
      `the verifier enrolled agent ${enrollment.agentId}, but this TPM's EK makes agent id ${expected}`,
    );
  }
  const secret = await session.activate(enrollment.credentialBlob, enrollment.encryptedSecret);
  let activated: ActivationResponse;
  try {
    activated = await client.call(
      'POST',
      `/v1/enrollments/${encodeURIComponent(enrollment.enrollmentId)}/activation`,
      ActivationResponse,
      { secret },
    );
  } finally {
    secret.fill(0);
  }
  if (activated.agentId !== expected) {
    throw new AttestorError('ERR_SERVER_RESPONSE', `the verifier activated agent ${activated.agentId}, not ${expected}`);
  }
  return { agentId: activated.agentId, spiffeId: activated.spiffeId };
}
