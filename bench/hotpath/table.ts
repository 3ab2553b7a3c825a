/**
 * An open-addressing hash table keyed by 128-bit fingerprints, in one typed array: a slot is
 * six Int32 words — the key's four lanes and two Uint32 values side by side — so a probe
 * costs one cache miss, not one per array. Value 0 marks an empty slot (callers store
 * value + 1 or a value that is never 0). Linear probing from the first lane; doubles at
 * 3/4 load. No allocation except when it grows.
 */
const STRIDE = 6;

export class FpTable {
  slots: Int32Array;
  mask: number;
  size = 0;

  constructor(capacityHint: number) {
    let cap = 1024;
    while (cap * 0.75 < capacityHint) cap *= 2;
    this.mask = cap - 1;
    this.slots = new Int32Array(cap * STRIDE);
  }

  get capacity(): number {
    return this.mask + 1;
  }

  get bytes(): number {
    return this.slots.byteLength;
  }

  /**
   * Reads the home slot of fp and returns a word of it: issued for every lookup of an event
   * before any of them is resolved, these loads overlap their cache misses (JavaScript has
   * no prefetch instruction; the caller folds the result into a field so it is not dropped).
   */
  touch(fp: Int32Array, at: number): number {
    return this.slots[(fp[at]! & this.mask) * STRIDE + 4]!;
  }

  /** The slot holding fp (fp[at..at+4)), or -(empty slot + 1) where it would go. */
  find(fp: Int32Array, at: number): number {
    const a = fp[at]!;
    const b = fp[at + 1]!;
    const c = fp[at + 2]!;
    const d = fp[at + 3]!;
    const slots = this.slots;
    const mask = this.mask;
    for (let slot = a & mask; ; slot = (slot + 1) & mask) {
      const k = slot * STRIDE;
      if (slots[k + 4] === 0) return -slot - 1;
      if (slots[k] === a && slots[k + 1] === b && slots[k + 2] === c && slots[k + 3] === d) return slot;
    }
  }

  val(slot: number): number {
    return this.slots[slot * STRIDE + 4]! >>> 0;
  }

  val2(slot: number): number {
    return this.slots[slot * STRIDE + 5]! >>> 0;
  }

  set(slot: number, value: number, value2 = 0): void {
    this.slots[slot * STRIDE + 4] = value;
    this.slots[slot * STRIDE + 5] = value2;
  }

  /** Inserts fp (known absent; `miss` is what find returned) with its value(s); returns its slot. */
  insert(miss: number, fp: Int32Array, at: number, value: number, value2 = 0): number {
    if (this.size + 1 > this.capacity * 0.75) {
      this.grow();
      miss = this.find(fp, at);
    }
    const slot = -miss - 1;
    const k = slot * STRIDE;
    const slots = this.slots;
    slots[k] = fp[at]!;
    slots[k + 1] = fp[at + 1]!;
    slots[k + 2] = fp[at + 2]!;
    slots[k + 3] = fp[at + 3]!;
    slots[k + 4] = value;
    slots[k + 5] = value2;
    this.size++;
    return slot;
  }

  private grow(): void {
    const old = this.slots;
    const cap = this.capacity * 2;
    this.mask = cap - 1;
    this.slots = new Int32Array(cap * STRIDE);
    for (let k = 0; k < old.length; k += STRIDE) {
      if (old[k + 4] === 0) continue;
      const to = (-this.find(old, k) - 1) * STRIDE;
      this.slots.set(old.subarray(k, k + STRIDE), to);
    }
  }
}
