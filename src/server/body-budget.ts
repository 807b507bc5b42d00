import { AttestorError } from '../errors.js';

/**
 * The request-body bytes the verifier takes on at once, in all and per client network. Agents'
 * routes are public and a body may be as large as a route takes (12 MB on the attestation
 * route by default): without a bound across connections, clients that declare large bodies
 * and send them slowly hold that much memory each until the request timeout, on every one of
 * thousands of connections. A body's declared length is reserved before any of it is read and
 * released when its response ends or its connection closes.
 *
 * Per network as well as in all, so that one network cannot take the whole budget: refusals
 * fall on the networks holding their share (the same keys as the connection limits).
 */
export interface BodyBudget {
  /**
   * Reserves `bytes` for a body from `network`; returns the release, to call once when the
   * request is over. Throws ERR_BUSY when the network's share or the whole budget is taken.
   */
  reserve(network: string, bytes: number): () => void;
  /** Bytes reserved now, for metrics and tests. */
  readonly held: number;
}

export function createBodyBudget(opts: { readonly total: number; readonly perNetwork: number }): BodyBudget {
  const byNetwork = new Map<string, number>();
  let held = 0;
  return {
    reserve(network, bytes) {
      const own = byNetwork.get(network) ?? 0;
      if (own + bytes > opts.perNetwork) {
        throw new AttestorError('ERR_BUSY', 'this network has as many request bytes in flight as the verifier takes from one network; retry shortly');
      }
      if (held + bytes > opts.total) throw new AttestorError('ERR_BUSY', 'the verifier holds as many request bytes as it takes; retry shortly');
      byNetwork.set(network, own + bytes);
      held += bytes;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        held -= bytes;
        const left = byNetwork.get(network)! - bytes;
        if (left === 0) byNetwork.delete(network);
        else byNetwork.set(network, left);
      };
    },
    get held() {
      return held;
    },
  };
}
