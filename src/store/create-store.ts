import { createAgentStore } from './agents.js';
import { createAttestationStore } from './attestations.js';
import { createAuditStore } from './audit.js';
import { createBaselineStore } from './baselines.js';
import { createChallengeStore } from './challenges.js';
import { createEnrollmentStore } from './enrollments.js';
import { createKeyStore } from './keys.js';
import type { Clock, Database } from './sql.js';
import type { Store } from './store.js';
import { createTokenStore } from './tokens.js';

/** The Store of either dialect: the entity modules over the dialect's Database. */
export function createStore(db: Database, clock: Clock): Store {
  return {
    dialect: db.dialect,
    enrollments: createEnrollmentStore(db, clock),
    agents: createAgentStore(db, clock),
    challenges: createChallengeStore(db),
    baselines: createBaselineStore(db, clock),
    attestations: createAttestationStore(db, clock),
    keys: createKeyStore(db, clock),
    tokens: createTokenStore(db, clock),
    audit: createAuditStore(db),
    ping: () => db.ping(),
    close: () => db.close(),
  };
}
