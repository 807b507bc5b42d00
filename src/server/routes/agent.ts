import { z } from 'zod';
import {
  AGENT_ID,
  ActivationRequest,
  ActivationResponse,
  AttestationRequest,
  AttestationResponse,
  ChallengeResponse,
  EnrollmentRequest,
  EnrollmentResponse,
  UUID,
} from '../../wire/schemas.js';
import type { AttestationFlow } from '../flows/attestation.js';
import type { EnrollmentFlow } from '../flows/enrollment.js';
import { agentIdOf } from '../../tpm/agent-id.js';
import type { AgentRouteLimits } from '../rate-limit.js';
import { route, type Route } from '../route.js';
import { spiffeIdOf } from '../spiffe.js';

/** The routes agents call (SERVICE.md "Flows over HTTP"); JSON or CBOR. */
export function agentRoutes(deps: {
  enrollment: EnrollmentFlow;
  attestation: AttestationFlow;
  trustDomain: string;
  limits: AgentRouteLimits;
}): Route[] {
  const formats = ['json', 'cbor'] as const;
  const iso = (ms: number) => new Date(ms).toISOString();
  return [
    route({
      method: 'post',
      path: '/v1/enrollments',
      operationId: 'createEnrollment',
      summary: 'Enroll a TPM: EK (certificate) and AK in, a MakeCredential challenge out',
      tag: 'agent',
      access: 'agent',
      formats,
      body: EnrollmentRequest,
      responses: { 201: EnrollmentResponse },
      errors: ['ERR_EK_CERT_CHAIN', 'ERR_EK_CERT_KEY_MISMATCH', 'ERR_AK_ATTRIBUTES', 'ERR_ENROLLMENT_CONFLICT', 'ERR_RATE_LIMITED'],
      admit: (client) => deps.limits.enrollment.address(client),
      handle: async ({ body, client }) => {
        // The agent is named by the body: counted once it is decoded.
        deps.limits.enrollment.agent(`${agentIdOf(body.ekPublic)} ${client}`);
        const e = await deps.enrollment.enroll(body);
        return { status: 201, body: { enrollmentId: e.enrollmentId, agentId: e.agentId, credentialBlob: e.credentialBlob, encryptedSecret: e.encryptedSecret, expiresAt: iso(e.expiresAt) } };
      },
    }),
    route({
      method: 'post',
      path: '/v1/enrollments/:id/activation',
      operationId: 'activateEnrollment',
      summary: 'Prove the TPM recovered the secret: creates the agent',
      tag: 'agent',
      access: 'agent',
      formats,
      params: z.object({ id: UUID }),
      body: ActivationRequest,
      responses: { 200: ActivationResponse },
      errors: ['ERR_ENROLLMENT_NOT_FOUND', 'ERR_ACTIVATION_FAILED', 'ERR_ENROLLMENT_CONFLICT', 'ERR_RATE_LIMITED'],
      // Activation names no agent until its enrollment is read: the address budget only.
      admit: (client) => deps.limits.enrollment.address(client),
      handle: async ({ params, body }) => {
        const agent = await deps.enrollment.activate(params.id, body.secret);
        return { status: 200, body: { agentId: agent.id, spiffeId: spiffeIdOf(deps.trustDomain, agent.id) } };
      },
    }),
    route({
      method: 'post',
      path: '/v1/agents/:id/challenges',
      operationId: 'createChallenge',
      summary: 'A single-use nonce and the PCR selection to quote',
      tag: 'agent',
      access: 'agent',
      formats,
      params: z.object({ id: AGENT_ID }),
      responses: { 201: ChallengeResponse },
      errors: ['ERR_AGENT_NOT_FOUND', 'ERR_AGENT_NOT_ACTIVE', 'ERR_RATE_LIMITED'],
      admit: admitFor(deps.limits.challenge),
      handle: async ({ params }) => {
        const c = await deps.attestation.challenge(params.id);
        return { status: 201, body: { nonce: c.nonce, expiresAt: iso(c.expiresAt), pcrSelection: c.pcrSelection } };
      },
    }),
    route({
      method: 'post',
      path: '/v1/agents/:id/attestations',
      operationId: 'createAttestation',
      summary: 'Evidence in; the verdict and, when affirming, credentials out',
      tag: 'agent',
      access: 'agent',
      formats,
      bodyLimit: 'attestation',
      params: z.object({ id: AGENT_ID }),
      body: AttestationRequest,
      responses: { 200: AttestationResponse },
      errors: [
        'ERR_ATTESTATION_REFUSED',
        'ERR_NO_BASELINE',
        'ERR_NONCE_UNKNOWN',
        'ERR_NONCE_EXPIRED',
        'ERR_SIGNATURE_INVALID',
        'ERR_QUOTE_NONCE_MISMATCH',
        'ERR_AUDIENCE_NOT_ALLOWED',
        'ERR_AGENT_NOT_FOUND',
        'ERR_AGENT_NOT_ACTIVE',
        'ERR_RATE_LIMITED',
      ],
      admit: admitFor(deps.limits.attestation),
      handle: async ({ params, body }) => {
        return { status: 200, body: await deps.attestation.attest(params.id, body) };
      },
    }),
  ];
}

/** The client's budget, then the agent's from this client (a path id that is no agent id is refused later, by its schema). */
function admitFor(limits: AgentRouteLimits['challenge']): NonNullable<Route['admit']> {
  return (client, params) => {
    limits.address(client);
    if (AGENT_ID.safeParse(params.id).success) limits.agent(`${params.id} ${client}`);
  };
}
