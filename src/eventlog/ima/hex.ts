import { ParseError } from '../../errors.js';

const NIBBLE = new Int8Array(256).fill(-1);
for (let i = 0; i < 10; i++) NIBBLE[0x30 + i] = i;
for (let i = 0; i < 6; i++) {
  NIBBLE[0x41 + i] = 10 + i;
  NIBBLE[0x61 + i] = 10 + i;
}

/**
 * Strict hex decoding of ASCII bytes (Buffer.from(..., 'hex') stops silently at the first
 * bad character, which would let a malformed list parse as a shorter digest).
 */
export function decodeHex(text: Uint8Array, where: string): Uint8Array {
  if (text.length % 2 !== 0) throw new ParseError('ERR_IMA_MALFORMED', `${where}: odd number of hex digits`);
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = NIBBLE[text[2 * i] as number] as number;
    const lo = NIBBLE[text[2 * i + 1] as number] as number;
    if (hi < 0 || lo < 0) throw new ParseError('ERR_IMA_MALFORMED', `${where}: not a hex digit at position ${2 * i}`);
    out[i] = (hi << 4) | lo;
  }
  return out;
}
