/** An agent's SPIFFE ID (SERVICE.md "Identities"): spiffe://<trust-domain>/agent/tpm/<agent-id>. */
export function spiffeIdOf(trustDomain: string, agentId: string): string {
  return `spiffe://${trustDomain}/agent/tpm/${agentId}`;
}
