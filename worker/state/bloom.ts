import { fmix32 } from '../../common/keygroups';

/**
 * A Bloom filter over state keys: "this key is certainly not in RocksDB". Most keys an event
 * needs (a new event's dedup identity, a customer's first marker in a bucket) do not exist
 * yet, and asking RocksDB costs microseconds each from Node; the filter answers those for
 * the price of a hash. False positives only cost a read; there are no false negatives,
 * because every key written is added, and the filter is rebuilt from a scan at start-up.
 */
export class BloomFilter {
  private readonly bits: Uint32Array;
  private readonly mask: number;

  /** `sizeBits` is rounded up to a power of two (at least 2^10). */
  constructor(
    sizeBits: number,
    private readonly hashes = 4,
  ) {
    let size = 1024;
    while (size < sizeBits) size *= 2;
    this.bits = new Uint32Array(size / 32);
    this.mask = size - 1;
  }

  get sizeBytes(): number {
    return this.bits.byteLength;
  }

  add(key: string): void {
    const [h1, h2] = hashPair(key);
    for (let i = 0; i < this.hashes; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.mask;
      this.bits[bit >>> 5]! |= 1 << (bit & 31);
    }
  }

  /** Adds `key`; true when every one of its bits was set already (it might have been added before). One hash for both questions. */
  addReporting(key: string): boolean {
    const [h1, h2] = hashPair(key);
    let seen = true;
    for (let i = 0; i < this.hashes; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.mask;
      const word = bit >>> 5;
      const m = 1 << (bit & 31);
      if ((this.bits[word]! & m) === 0) {
        seen = false;
        this.bits[word]! |= m;
      }
    }
    return seen;
  }

  mightContain(key: string): boolean {
    const [h1, h2] = hashPair(key);
    for (let i = 0; i < this.hashes; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.mask;
      if ((this.bits[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }
}

const pair: [number, number] = [0, 0];

/** Two independent 32-bit hashes of a string's UTF-16 code units (FNV-1a and a multiply-xorshift), finalised with murmur3's fmix32. */
function hashPair(key: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  pair[0] = fmix32(a);
  pair[1] = fmix32(b) | 1;
  return pair;
}
