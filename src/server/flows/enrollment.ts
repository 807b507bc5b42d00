import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { checkAttestationKey } from '../../appraisal/attestation-key.js';
import { equalBytes } from '../../bytes.js';
import { AttestorError } from '../../errors.js';
import { verifyEkCertificate } from '../../tpm/ek-certificate.js';
import type { EkRootStore } from '../../tpm/ek-roots.js';
import { makeCredential } from '../../tpm/make-credential.js';
import { agentIdOf } from '../../tpm/agent-id.js';
import { objectName } from '../../tpm/name.js';
import { parseTpm2bPublic } from '../../tpm/public.js';
import type { Agent, Store } from '../../store/store.js';
import type { z } from 'zod';
import type { EnrollmentRequest } from '../../wire/schemas.js';
import type { Metrics } from '../metrics.js';
import { spiffeIdOf } from '../spiffe.js';

/*
 * DESIGN flow 1. Enrollment checks that the EK is a real TPM's (its certificate chains to a
 * configured vendor root and certifies exactly this EK, or an operator registered its hash)
 * and that the AK has the attributes of an attestation key, then challenges the TPM with
 * MakeCredential: only the TPM holding that EK, with that AK loaded, can recover the secret.
 * Activation spends the pending enrollment whatever its outcome (Keylime CVE-2023-38201) and
 * compares the secret in constant time.
 */

export interface EnrollmentDeps {
  readonly store: Store;
  readonly ekRoots: EkRootStore;
  /** Agent ids (EK hashes) an operator registered for TPMs without an EK certificate. */
  readonly registeredEkHashes: ReadonlySet<string>;
  readonly trustDomain: string;
  readonly enrollmentTtlSeconds: number;
  readonly allowSha1: boolean;
  readonly now: () => number;
  readonly metrics: Metrics;
}

export interface Enrollment {
  readonly enrollmentId: string;
  readonly agentId: string;
  readonly credentialBlob: Uint8Array;
  readonly encryptedSecret: Uint8Array;
  readonly expiresAt: number;
}

/** The secret MakeCredential protects: as long as the EK's name hash (SHA-256) allows. */
const SECRET_BYTES = 32;

export function createEnrollmentFlow(deps: EnrollmentDeps) {
  return {
    enroll: counted(deps.metrics, 'enrolled', async (req: z.output<typeof EnrollmentRequest>): Promise<Enrollment> => {
      const ek = parseTpm2bPublic(req.ekPublic);
      const ak = parseTpm2bPublic(req.akPublic);
      checkAttestationKey(ak, { allowSha1: deps.allowSha1 });
      const agentId = agentIdOf(ek);
      const now = deps.now();
      if (req.ekCertificate) {
        verifyEkCertificate(req.ekCertificate, deps.ekRoots, { ekPublic: ek, now: new Date(now), extraIntermediates: req.ekChain ?? [] });
      } else if (!deps.registeredEkHashes.has(agentId)) {
        throw new AttestorError('ERR_EK_CERT_CHAIN', 'no EK certificate was sent and this EK is not registered by an operator');
      }
      // Refused before any work when the id is taken by another EK or AK; the store checks again at activation.
      const existing = await deps.store.agents.get(agentId);
      if (existing) checkSameKeys(existing, req.ekPublic, req.akPublic);

      const secret = randomBytes(SECRET_BYTES);
      const { credentialBlob, encryptedSecret } = makeCredential(ek, objectName(ak), secret);
      const enrollmentId = randomUUID();
      const expiresAt = now + deps.enrollmentTtlSeconds * 1000;
      await deps.store.enrollments.create(
        {
          id: enrollmentId,
          agentId,
          ekPublic: req.ekPublic,
          akPublic: req.akPublic,
          ekCertificate: req.ekCertificate ?? null,
          labels: req.labels ?? {},
          secretHash: createHash('sha256').update(secret).digest(),
          createdAt: now,
          expiresAt,
        },
        { actor: `agent:${agentId}`, action: 'enrollment.create', subject: agentId, details: { enrollmentId, ekCertificate: req.ekCertificate !== undefined } },
      );
      secret.fill(0);
      return { enrollmentId, agentId, credentialBlob, encryptedSecret, expiresAt };
    }),

    activate: counted(deps.metrics, 'activated', async (enrollmentId: string, secret: Uint8Array): Promise<Agent> => {
      const now = deps.now();
      const pending = await deps.store.enrollments.take(enrollmentId, now);
      if (!pending) throw new AttestorError('ERR_ENROLLMENT_NOT_FOUND', 'no pending enrollment with this id (unknown, expired or already used)');
      const given = createHash('sha256').update(secret).digest();
      if (!timingSafeEqual(given, pending.secretHash)) {
        throw new AttestorError('ERR_ACTIVATION_FAILED', 'activation failed: the enrollment is dropped, enroll again');
      }
      return deps.store.agents.activate(
        {
          id: pending.agentId,
          ekPublic: pending.ekPublic,
          akPublic: pending.akPublic,
          ekCertificate: pending.ekCertificate,
          labels: pending.labels,
          createdAt: now,
        },
        { actor: `agent:${pending.agentId}`, action: 'agent.activate', subject: pending.agentId, details: { enrollmentId, spiffeId: spiffeIdOf(deps.trustDomain, pending.agentId) } },
      );
    }),
  };
}

/** Counts a step's outcome in attestor_enrollments_total: `result` when it succeeds, `refused` when it throws. */
function counted<A extends unknown[], R>(metrics: Metrics, result: string, step: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args) => {
    try {
      const r = await step(...args);
      metrics.enrollments.inc({ result });
      return r;
    } catch (e) {
      metrics.enrollments.inc({ result: 'refused' });
      throw e;
    }
  };
}

export type EnrollmentFlow = ReturnType<typeof createEnrollmentFlow>;

/** One EK, one AK, one id (Keylime CVE-2025-13609): another EK or AK under an enrolled id is refused. */
function checkSameKeys(agent: Agent, ekPublic: Uint8Array, akPublic: Uint8Array): void {
  if (!equalBytes(agent.ekPublic, ekPublic) || !equalBytes(agent.akPublic, akPublic)) {
    throw new AttestorError('ERR_ENROLLMENT_CONFLICT', 'this agent id is enrolled with another EK or AK; an operator must remove it first');
  }
}
