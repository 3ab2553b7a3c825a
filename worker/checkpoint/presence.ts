import { keyGroupPrefix, keyGroupRange } from '../state/keys';
import type { RocksStore } from '../state/rocks';
import type { GroupEntry } from './format';

/**
 * The per-group presence record `ggggG`: written with a group's first commit, or last by a
 * restore of the group (its commit point). It answers "does this worker hold this group's
 * state" without scanning, and carries what a restore left, so that:
 * - a worker that owns a group with no local state restores it at start;
 * - a group whose state is authoritative (it has local state) never hydrates a counter it
 *   lacks from the sink: the counter was first counted after that state, and the replay
 *   counts it again from zero (hydrating it would add its events twice);
 * - right after a restore, the next checkpoint continues the restored chain with a delta,
 *   and a later restore of a longer chain of the same group (pre-copy, then the final
 *   delta of a hand-over) applies only the new deltas.
 * The record is never put in a checkpoint chunk: a restore writes its own.
 */
export interface Presence {
  /** When the group's state began here (ms since the epoch). */
  readonly sinceMs: number;
  /** The manifest the state was restored from, if it was. */
  readonly restoredFrom: string | null;
  /** The chain exactly applied by that restore, while no commit has changed the group since; null otherwise. */
  readonly restored: GroupEntry | null;
  /** Set while a restore writes the group: the group's records are incomplete and it counts as having no local state. */
  readonly restoring?: boolean;
}

export const PRESENCE_KIND = 'G';

export function presenceKey(group: number): string {
  return `${keyGroupPrefix(group)}${PRESENCE_KIND}`;
}

export function encodePresence(p: Presence): string {
  return JSON.stringify(p);
}

export function decodePresence(text: string | undefined): Presence | undefined {
  if (text === undefined) return undefined;
  try {
    const p = JSON.parse(text) as Presence;
    return typeof p.sinceMs === 'number' ? p : undefined;
  } catch {
    return undefined;
  }
}

/** The presence records of `groups` (undefined where a group has none). */
export async function readPresence(store: RocksStore, groups: readonly number[]): Promise<Map<number, Presence | undefined>> {
  const values = await store.getMany(groups.map(presenceKey));
  return new Map(groups.map((g, i) => [g, decodePresence(values[i])]));
}

/**
 * The groups among `groups` that have local state: a presence record (not one of a restore
 * in progress), or, without one, any record in the group's range (a data dir written before
 * presence records existed).
 */
export async function groupsWithLocalState(store: RocksStore, groups: readonly number[]): Promise<Set<number>> {
  const presence = await readPresence(store, groups);
  const out = new Set<number>();
  for (const g of groups) {
    const p = presence.get(g);
    if (p !== undefined ? p.restoring !== true : await hasAnyRecord(store, g)) out.add(g);
  }
  return out;
}

async function hasAnyRecord(store: RocksStore, group: number): Promise<boolean> {
  const reader = store.reader(keyGroupRange(group), true);
  let found = false;
  try {
    found = await reader.first();
  } finally {
    await reader.end();
  }
  return found;
}
