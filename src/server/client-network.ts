import { isIPv4, isIPv6 } from 'node:net';

/**
 * What a client is counted by (rate limits, connections per address): its IPv4 address, also
 * when it arrives IPv4-mapped (`::ffff:192.0.2.1` on a dual-stack socket), or the /64 its IPv6
 * address is in. A host is given a whole /64 (RFC 6177), so counting IPv6 addresses would give
 * one host 2^64 budgets. Anything else (no address: a socket already gone) counts as itself.
 */
export function clientNetwork(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped !== undefined && isIPv4(mapped)) return mapped;
  if (isIPv4(address) || !isIPv6(address)) return address;
  return `${expandIpv6(address.replace(/%.*$/, '')).slice(0, 4).join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address, lowercase without leading zeros. */
function expandIpv6(address: string): string[] {
  // A dotted IPv4 tail (::ffff:..., 64:ff9b::...) is the last two groups.
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address);
  const text = dotted
    ? `${address.slice(0, dotted.index)}${((Number(dotted[1]) << 8) | Number(dotted[2])).toString(16)}:${((Number(dotted[3]) << 8) | Number(dotted[4])).toString(16)}`
    : address;
  const [head, tail] = text.split('::') as [string, string | undefined];
  const groups = (part: string | undefined) => (part ? part.split(':') : []);
  const left = groups(head);
  const right = groups(tail);
  const middle = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...middle, ...right].map((g) => Number.parseInt(g, 16).toString(16));
}
