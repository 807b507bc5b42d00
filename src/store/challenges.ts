import { int, json, jsonParam, text, textOrNull } from './columns.js';
import { statements, type Database, type Row } from './sql.js';
import type { Challenge, ChallengeStore } from './store.js';

const COLUMNS = 'nonce, agent_id, created_at, expires_at, baseline_id, pcr_selection';

const SQL = statements('challenges', {
  // A challenge lost in a crash is asked for again; the use of a nonce is made durable by the
  // synced commit of the attestation it answers, before the answer is sent.
  insert: { unsynced: `INSERT INTO challenges (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)` },
  // Deleting is the claim: of concurrent consumers, only one gets the row back. Another
  // agent's nonce does not match and stays for its agent.
  consume: { unsynced: `DELETE FROM challenges WHERE nonce = $1 AND agent_id = $2 RETURNING ${COLUMNS}` },
  purge: 'DELETE FROM challenges WHERE expires_at <= $1',
});

export function createChallengeStore(db: Database): ChallengeStore {
  return {
    async create(c) {
      await db.changes(SQL.insert, [c.nonce, c.agentId, c.createdAt, c.expiresAt, c.baselineId, jsonParam(c.pcrSelection)]);
    },
    async consume(nonce, agentId, now) {
      const consumed = await db.row(SQL.consume, [nonce, agentId]);
      if (!consumed) return { ok: false, reason: 'unknown' };
      const challenge = toChallenge(consumed);
      return now < challenge.expiresAt ? { ok: true, challenge } : { ok: false, reason: 'expired' };
    },
    purgeExpired: (now) => db.changes(SQL.purge, [now]),
  };
}

function toChallenge(r: Row): Challenge {
  return {
    nonce: text(r.nonce),
    agentId: text(r.agent_id),
    createdAt: int(r.created_at),
    expiresAt: int(r.expires_at),
    baselineId: textOrNull(r.baseline_id),
    pcrSelection: json<Challenge['pcrSelection']>(r.pcr_selection),
  };
}
