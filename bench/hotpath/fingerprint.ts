/**
 * 128-bit fingerprints for the hot-path prototype, computed with 32-bit integer arithmetic
 * only (no BigInt, no allocation): four 32-bit lanes mixed block by block and finalised the
 * way MurmurHash3's x86 128-bit variant does it (its published multipliers and rotations).
 *
 * Two entry points, both writing four lanes into an output array:
 * - fpString: a string's UTF-16 code units, two per 32-bit word, eight per block;
 * - fpWords: a run of 32-bit words already in an array (fingerprints of components laid
 *   side by side, plus small integers), so a tuple's fingerprint is built from the
 *   fingerprints of its parts without touching their text again.
 *
 * The seed separates domains (a dedup identity, a counter, a marker, an id-less identity):
 * equal inputs under different seeds give unrelated fingerprints.
 *
 * Not a cryptographic hash: the collision bound (docs/adr/0007-hot-path.md) assumes inputs
 * that are not chosen to collide.
 */

const C1 = 0x239b961b;
const C2 = 0xab0e9789 | 0;
const C3 = 0x38b34ae5;
const C4 = 0xa1e38b93 | 0;

let h1 = 0;
let h2 = 0;
let h3 = 0;
let h4 = 0;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

function block(k1: number, k2: number, k3: number, k4: number): void {
  k1 = Math.imul(rotl(Math.imul(k1, C1), 15), C2);
  h1 ^= k1;
  h1 = (Math.imul(rotl(h1, 19) + h2, 5) + 0x561ccd1b) | 0;
  k2 = Math.imul(rotl(Math.imul(k2, C2), 16), C3);
  h2 ^= k2;
  h2 = (Math.imul(rotl(h2, 17) + h3, 5) + 0x0bcaa747) | 0;
  k3 = Math.imul(rotl(Math.imul(k3, C3), 17), C4);
  h3 ^= k3;
  h3 = (Math.imul(rotl(h3, 15) + h4, 5) + 0x96cd1c35) | 0;
  k4 = Math.imul(rotl(Math.imul(k4, C4), 18), C1);
  h4 ^= k4;
  h4 = (Math.imul(rotl(h4, 13) + h1, 5) + 0x32ac3b17) | 0;
}

function avalanche(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

function finish(length: number, out: Int32Array, at: number): void {
  h1 ^= length;
  h2 ^= length;
  h3 ^= length;
  h4 ^= length;
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  h1 = avalanche(h1);
  h2 = avalanche(h2);
  h3 = avalanche(h3);
  h4 = avalanche(h4);
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  out[at] = h1;
  out[at + 1] = h2;
  out[at + 2] = h3;
  out[at + 3] = h4;
}

function pair(s: string, i: number): number {
  return s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16);
}

/** The fingerprint of a string (its UTF-16 code units) under `seed`, into out[at..at+4). */
export function fpString(s: string, seed: number, out: Int32Array, at: number): void {
  h1 = h2 = h3 = h4 = seed;
  const n = s.length;
  let i = 0;
  for (; i + 8 <= n; i += 8) block(pair(s, i), pair(s, i + 2), pair(s, i + 4), pair(s, i + 6));
  if (i < n) {
    // The tail, zero-padded (charCodeAt past the end is NaN, which `|` turns into 0);
    // the length mixed in by finish() tells "a" from "a\0".
    block(pair(s, i), pair(s, i + 2), pair(s, i + 4), pair(s, i + 6));
  }
  finish(n, out, at);
}

/** The fingerprint of `words` 32-bit words of src from `from` (a multiple of 4), into out[at..at+4). */
export function fpWords(src: Int32Array, from: number, words: number, seed: number, out: Int32Array, at: number): void {
  h1 = h2 = h3 = h4 = seed;
  const end = from + words;
  for (let i = from; i < end; i += 4) block(src[i]!, src[i + 1]!, src[i + 2]!, src[i + 3]!);
  finish(words, out, at);
}
