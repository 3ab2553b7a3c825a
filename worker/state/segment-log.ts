import { keyGroupPrefix, segmentKey } from './keys';

/** What the log holds of one key group: its first live sequence number, the next one, and the live segments' bytes. */
interface GroupLog {
  base: number;
  next: number;
  bytes: number;
}

/**
 * The native engine's segments of each key group (`gggg S seq` in worker/state/keys.ts): a
 * group's state is its segments loaded in the order they were written. Between sweeps the
 * log only grows, one segment per commit that changed the group; a sweep's segment holds the
 * group's whole state and replaces every earlier one, deleted in the same commit, so a
 * group's log is its last sweep segment and the commits since. This class numbers the
 * segments and knows which keys a sweep deletes; it does no I/O.
 */
export class SegmentLog {
  private readonly groups = new Map<number, GroupLog>();

  /** A group's log as read from the store: the sequence number of its first segment (none: undefined), the next one, their bytes. */
  loaded(group: number, first: number | undefined, next: number, bytes: number): void {
    this.groups.set(group, { base: first ?? next, next, bytes });
  }

  /** The key of a new segment of `bytes` bytes appended to the group's log. */
  append(group: number, bytes: number): string {
    const log = this.of(group);
    log.bytes += bytes;
    return segmentKey(keyGroupPrefix(group), log.next++);
  }

  /** The key of a sweep segment of `bytes` bytes, and the keys of every earlier segment of the group, which it replaces. */
  replace(group: number, bytes: number): { key: string; deletes: string[] } {
    const log = this.of(group);
    const prefix = keyGroupPrefix(group);
    const deletes: string[] = [];
    for (let seq = log.base; seq < log.next; seq++) deletes.push(segmentKey(prefix, seq));
    const key = segmentKey(prefix, log.next);
    log.base = log.next++;
    log.bytes = bytes;
    return { key, deletes };
  }

  /** The group's live segments and their bytes. */
  size(group: number): { segments: number; bytes: number } {
    const log = this.groups.get(group);
    return log === undefined ? { segments: 0, bytes: 0 } : { segments: log.next - log.base, bytes: log.bytes };
  }

  private of(group: number): GroupLog {
    let log = this.groups.get(group);
    if (log === undefined) {
      log = { base: 0, next: 0, bytes: 0 };
      this.groups.set(group, log);
    }
    return log;
  }
}
