import type { CountKernel, SpillRecords } from '../native/kernel';
import { dedupExpired } from './expiry';
import { keyGroupPrefix, KIND_OFFSET, kindRange } from './keys';
import type { RocksStore } from './rocks';

/**
 * The native engine's spill records (its memory budget, docs/adr/0007-hot-path.md "As built
 * (session 16)"): what the kernel evicted from memory, one record per entry, under the key
 * group's prefix so that checkpoints and hand-overs carry them like every other record.
 *
 *   gggg I <fp>   a dedup identity: its first ingest second (u32 LE)
 *   gggg M <fp>   a customer's uniqueness markers of epoch 0 (native/hotpath/src/spill.rs)
 *
 * <fp> is the entry's 128-bit fingerprint as 32 hex digits (its 16 bytes little-endian), and
 * values are base64 (the binding stores strings). The kernel names the records it needs and
 * those it evicts as "needs": 21 bytes each, the kind letter, the key group (u32 LE) and the
 * fingerprint. The state is the union of the segments and these records: a record is not
 * deleted when its entry comes back into memory.
 */

export type SpillKind = 'I' | 'M';

const NEED_BYTES = 21;

/** The store key of need i of `needs`. */
function needKey(needs: Buffer, i: number): string {
  const at = i * NEED_BYTES;
  return spillKey(needs.readUInt32LE(at + 1), String.fromCharCode(needs[at]!) as SpillKind, needs.toString('hex', at + 5, at + NEED_BYTES));
}

export function spillKey(group: number, kind: SpillKind, fpHex: string): string {
  return `${keyGroupPrefix(group)}${kind}${fpHex}`;
}

/** The store keys of the kernel's needs. */
export function needKeys(needs: Buffer): string[] {
  return Array.from({ length: needs.length / NEED_BYTES }, (_, i) => needKey(needs, i));
}

/** Values as the kernel's restore takes them: found flags, the values back to back, their ends. */
export function packValues(values: ReadonlyArray<string | undefined>): { found: Uint8Array; values: Buffer; ends: Uint32Array } {
  const found = new Uint8Array(values.length);
  const ends = new Uint32Array(values.length);
  const parts: Buffer[] = [];
  let end = 0;
  values.forEach((v, i) => {
    if (v !== undefined) {
      const b = Buffer.from(v, 'base64');
      parts.push(b);
      end += b.length;
      found[i] = 1;
    }
    ends[i] = end;
  });
  return { found, values: Buffer.concat(parts), ends };
}

/** Reads the records the kernel needs and hands them to it. */
export async function restoreNeeds(kernel: CountKernel, needs: Buffer, read: (keys: string[]) => Promise<Array<string | undefined>>): Promise<number> {
  const keys = needKeys(needs);
  const packed = packValues(await read(keys));
  kernel.restore(needs, packed.found, packed.values, packed.ends);
  return keys.length;
}

/** The puts that commit what `evict` spilled. */
export function spillPuts(spilled: SpillRecords): Array<[string, string]> {
  const puts: Array<[string, string]> = [];
  const { keys, values, ends } = spilled;
  for (let i = 0; i < ends.length; i++) {
    puts.push([needKey(keys, i), values.toString('base64', i === 0 ? 0 : ends[i - 1], ends[i])]);
  }
  return puts;
}

/** A record key's fingerprint bytes. */
function fingerprintOf(key: string): Buffer {
  return Buffer.from(key.slice(KIND_OFFSET + 1), 'hex');
}

/** Tells the kernel which of a loaded group's entries have spill records (their keys only are read). */
export async function loadSpillRecords(store: RocksStore, kernel: CountKernel, group: number): Promise<void> {
  for (const kind of ['I', 'M'] as const) {
    const fps: Buffer[] = [];
    await store.scan(kindRange(keyGroupPrefix(group), kind), (key) => fps.push(fingerprintOf(key)), true);
    if (fps.length > 0) kernel.loadSpilled(group, kind, Buffer.concat(fps));
  }
}

/**
 * The expiry of a group's spill records at `cutoff` (the rules of worker/state/expiry.ts, as
 * the kernel's sweep applies them in memory): identity records first counted more than the
 * dedup retention before it are deleted; marker records lose the markers of buckets whose
 * horizon passed or whose epoch moved on (the kernel decides), and are deleted when none is
 * left. Returns the writes for the sweep's commit and the identities and markers removed.
 */
export async function sweepSpillRecords(store: RocksStore, kernel: CountKernel, group: number, cutoff: number, dedupRetentionSec: number): Promise<{ puts: Array<[string, string]>; deletes: string[]; identities: number; markers: number }> {
  const prefix = keyGroupPrefix(group);
  const deletes: string[] = [];
  const expired: Buffer[] = [];
  await store.scan(kindRange(prefix, 'I'), (key, value) => {
    const first = Buffer.from(value, 'base64');
    if (first.length === 4 && dedupExpired(first.readUInt32LE(0), cutoff, dedupRetentionSec)) {
      deletes.push(key);
      expired.push(fingerprintOf(key));
    }
  });
  if (expired.length > 0) kernel.forgetIdentities(group, Buffer.concat(expired));
  const keys: string[] = [];
  const fps: Buffer[] = [];
  const values: string[] = [];
  await store.scan(kindRange(prefix, 'M'), (key, value) => {
    keys.push(key);
    fps.push(fingerprintOf(key));
    values.push(value);
  });
  const puts: Array<[string, string]> = [];
  let markers = 0;
  if (keys.length > 0) {
    const packed = packValues(values);
    const swept = kernel.sweepMarkerRecords(group, cutoff, Buffer.concat(fps), packed.values, packed.ends);
    let r = 0;
    keys.forEach((key, i) => {
      if (swept.actions[i] === 1) {
        puts.push([key, swept.values.toString('base64', r === 0 ? 0 : swept.ends[r - 1], swept.ends[r])]);
        r++;
      } else if (swept.actions[i] === 2) {
        deletes.push(key);
      }
    });
    markers = swept.removed;
  }
  return { puts, deletes, identities: expired.length, markers };
}
