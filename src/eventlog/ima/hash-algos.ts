import { ParseError } from '../../errors.js';

/**
 * The kernel's hash algorithms as IMA names them: `enum hash_algo`
 * (include/uapi/linux/hash_info.h) numbers them in signature headers, and `hash_algo_name`
 * (crypto/hash_info.c) spells them in d-ng template fields ("sha256:<digest>").
 */
export interface ImaHashAlgo {
  readonly name: string;
  /** Value of `enum hash_algo`. */
  readonly id: number;
  /** Digest size in bytes (`hash_digest_size`). */
  readonly size: number;
  /**
   * Broken (md4, md5, sha1), or short of 128-bit collision resistance (RIPEMD, Tiger, sha224):
   * a file digest in an allowlist may still use one (old kernels measure with sha1), a
   * signature may not, since a collision would let one signature cover two files.
   */
  readonly weak?: true;
}

const ALGOS: readonly ImaHashAlgo[] = [
  { name: 'md4', id: 0, size: 16, weak: true },
  { name: 'md5', id: 1, size: 16, weak: true },
  { name: 'sha1', id: 2, size: 20, weak: true },
  { name: 'rmd160', id: 3, size: 20, weak: true },
  { name: 'sha256', id: 4, size: 32 },
  { name: 'sha384', id: 5, size: 48 },
  { name: 'sha512', id: 6, size: 64 },
  { name: 'sha224', id: 7, size: 28, weak: true },
  { name: 'rmd128', id: 8, size: 16, weak: true },
  { name: 'rmd256', id: 9, size: 32, weak: true },
  { name: 'rmd320', id: 10, size: 40, weak: true },
  { name: 'wp256', id: 11, size: 32 },
  { name: 'wp384', id: 12, size: 48 },
  { name: 'wp512', id: 13, size: 64 },
  { name: 'tgr128', id: 14, size: 16, weak: true },
  { name: 'tgr160', id: 15, size: 20, weak: true },
  { name: 'tgr192', id: 16, size: 24, weak: true },
  { name: 'sm3', id: 17, size: 32 },
  { name: 'streebog256', id: 18, size: 32 },
  { name: 'streebog512', id: 19, size: 64 },
  { name: 'sha3-256', id: 20, size: 32 },
  { name: 'sha3-384', id: 21, size: 48 },
  { name: 'sha3-512', id: 22, size: 64 },
];

const BY_NAME = new Map(ALGOS.map((a) => [a.name, a]));
const BY_ID = new Map(ALGOS.map((a) => [a.id, a]));

export const IMA_SHA1 = BY_NAME.get('sha1') as ImaHashAlgo;

/** The algorithm a d-ng field or a baseline digest names; `where` locates it in messages. */
export function imaHashByName(name: string, where: string): ImaHashAlgo {
  const algo = BY_NAME.get(name);
  if (!algo) {
    throw new ParseError('ERR_IMA_DIGEST_ALG_UNSUPPORTED', `${where}: hash algorithm "${name.slice(0, 32)}" is not known`);
  }
  return algo;
}

/** The algorithm an `enum hash_algo` value names, if the kernel defines it. */
export function imaHashById(id: number): ImaHashAlgo | undefined {
  return BY_ID.get(id);
}
