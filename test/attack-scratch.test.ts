import { it } from 'vitest';
import { decodeBody } from '../src/wire/codec.js';
it('deep', () => {
  for (const [name, b] of [
    ['nested 0x81', Buffer.concat([Buffer.alloc(200000, 0x81), Buffer.from([0])])],
    ['nested 0x9f', Buffer.alloc(200000, 0x9f)],
    ['nested map', Buffer.concat([Buffer.from(Array(100000).fill([0xa1, 0x61, 0x61]).flat()), Buffer.from([0])])],
    ['huge array len', Buffer.from([0x9b, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff])],
    ['huge str len', Buffer.from([0x7b, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff])],
    ['bignum', Buffer.concat([Buffer.from([0xc2, 0x5a, 0, 3, 0, 0]), Buffer.alloc(196608, 0xff)])],
    ['tag 27 regexp', Buffer.from([0xd8, 27, 0x82, 0x66, ...Buffer.from('RegExp'), 0x64, ...Buffer.from('(a+)+')])],
    ['json deep', Buffer.from('['.repeat(200000))],
  ] as const) {
    const t = Date.now();
    try { const v = decodeBody(b, name === 'json deep' ? 'json' : 'cbor'); console.log('R', name, 'accepted', typeof v, (v as any)?.constructor?.name, Date.now() - t, 'ms'); }
    catch (e) { console.log('R', name, 'refused', (e as any).code, Date.now() - t, 'ms'); }
  }
});
