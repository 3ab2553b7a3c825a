import { keyGroupPrefix, kindRange, segmentKey, segmentSeq, type SegmentKind } from './keys';
import type { RocksStore } from './rocks';

/** One kind of a group's segments: the sequence numbers of the live ones, and their bytes. */
interface KindLog {
  seqs: number[];
  bytes: number;
}

interface GroupLog {
  next: number;
  S: KindLog;
  T: KindLog;
  /** A state segment holds counters: written before counters had segments of their own; only a full sweep may replace it. */
  countersInState: boolean;
}

/**
 * The native engine's segments of each key group (`gggg S seq` and `gggg T seq` in
 * worker/state/keys.ts): a group's state is its segments of both kinds loaded in the order
 * they were written, one sequence shared by the two kinds. Between sweeps the logs only
 * grow, a commit appending the group's counter segment (T) and then its state segment (S),
 * whose markers may refer to those counters. A sweep's state segment replaces every earlier
 * state segment of the group, deleted in the same commit; a full sweep's counter segment
 * replaces every earlier counter segment too. A state segment refers only to counters of
 * counter segments written before it, so the order survives any of these replacements. This
 * class numbers the segments and knows which keys a sweep deletes; it does no I/O.
 */
export class SegmentLog {
  private readonly groups = new Map<number, GroupLog>();

  /** A group's segments as read from the store (readSegments' order), each with whether it held counters (NativeState.load). */
  loaded(group: number, segments: ReadonlyArray<{ kind: SegmentKind; seq: number; bytes: number; holdsCounters: boolean }>): void {
    const log = emptyLog();
    this.groups.set(group, log);
    for (const { kind, seq, bytes, holdsCounters } of segments) {
      log[kind].seqs.push(seq);
      log[kind].bytes += bytes;
      log.next = Math.max(log.next, seq + 1);
      if (kind === 'S' && holdsCounters) log.countersInState = true;
    }
  }

  /** The key of a new segment of `bytes` bytes appended to the group's log of that kind. */
  append(group: number, kind: SegmentKind, bytes: number): string {
    const log = this.of(group);
    const seq = log.next++;
    log[kind].seqs.push(seq);
    log[kind].bytes += bytes;
    return segmentKey(keyGroupPrefix(group), seq, kind);
  }

  /**
   * The key of a sweep's segment of that kind (none when it is empty: `bytes` 0), and the
   * keys of the group's earlier segments of that kind, which it replaces.
   */
  replace(group: number, kind: SegmentKind, bytes: number): { key: string | undefined; deletes: string[] } {
    const log = this.of(group);
    const prefix = keyGroupPrefix(group);
    const deletes = log[kind].seqs.map((seq) => segmentKey(prefix, seq, kind));
    if (kind === 'T') log.countersInState = false;
    if (bytes === 0) {
      log[kind] = { seqs: [], bytes: 0 };
      return { key: undefined, deletes };
    }
    const seq = log.next++;
    log[kind] = { seqs: [seq], bytes };
    return { key: segmentKey(prefix, seq, kind), deletes };
  }

  /** Forgets a group the task no longer counts (its segments are loaded() again if it comes back). */
  forget(group: number): void {
    this.groups.delete(group);
  }

  /** The group's live segments of each kind and their bytes, and whether its state segments hold counters (then only a full sweep may replace them). */
  size(group: number): Record<SegmentKind, { segments: number; bytes: number }> & { countersInState: boolean } {
    const log = this.groups.get(group);
    const of = (k: KindLog | undefined): { segments: number; bytes: number } => ({ segments: k?.seqs.length ?? 0, bytes: k?.bytes ?? 0 });
    return { S: of(log?.S), T: of(log?.T), countersInState: log?.countersInState ?? false };
  }

  private of(group: number): GroupLog {
    let log = this.groups.get(group);
    if (log === undefined) {
      log = emptyLog();
      this.groups.set(group, log);
    }
    return log;
  }
}

function emptyLog(): GroupLog {
  return { next: 0, S: { seqs: [], bytes: 0 }, T: { seqs: [], bytes: 0 }, countersInState: false };
}

/**
 * A key group's segments of both kinds, decoded from base64, in the order they were written
 * (by sequence number), which is the order the kernel must load them in.
 */
export async function readSegments(store: RocksStore, group: number): Promise<Array<{ kind: SegmentKind; seq: number; segment: Buffer }>> {
  const prefix = keyGroupPrefix(group);
  const out: Array<{ kind: SegmentKind; seq: number; segment: Buffer }> = [];
  for (const kind of ['T', 'S'] as const) {
    await store.scan(kindRange(prefix, kind), (key, value) => out.push({ kind, seq: segmentSeq(key), segment: Buffer.from(value, 'base64') }));
  }
  return out.sort((a, b) => a.seq - b.seq);
}
