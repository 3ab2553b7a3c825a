import { randomBytes } from 'node:crypto';
import { AssignerProtocol, EachBatchPayload, PartitionAssigner } from 'kafkajs';
import type { JobConfig, KafkaConfig } from '../../common/job-config';
import { metrics } from '../runtime/metrics';
import { createKafka, LogFn, NO_RESTART_RETRY, stderrLog, SupervisedConsumer } from './kafka-client';
import { kafkaMetrics } from './kafka-metrics';
import { BUNDLE_HEADER, ROUTED_FROM_HEADER, decodeBundle, formatKeyedPosition, parseKeyedPosition, type BundledEvent } from './routed-bundle';
import type { Source, SourceRecord } from './types';

export interface KafkaKeyedSourceOptions {
  readonly job: JobConfig;
  readonly kafka: KafkaConfig;
  /** The key groups (= keyed-topic partitions) this worker owns at start; addGroups/removeGroups change them while running. */
  readonly keyGroups: readonly number[];
  /** The worker's ordinal, used in its consumer group name. */
  readonly ordinal: number;
  readonly log?: LogFn;
  /** Fetching pauses when this many records wait for the task (default 50 000). */
  readonly maxBuffered?: number;
}

const ASSIGNER_NAME = 'AbacusOwnedKeyGroups';

/**
 * The count stage's source: exactly the owned partitions of the keyed topic, from the
 * positions the task committed with its RocksDB state.
 *
 * kafkajs has no manual assignment (no `assign()`), only group subscriptions. The choice
 * made here (see docs/worker.md, "Reading the keyed topic"):
 *
 * - **A consumer group per consumer instance** (`<job>-count-<ordinal>-<random>`, a new one
 *   per process start and per restart after a crash): the consumer is its only member, so it
 *   never waits for another member's session to time out (a SIGKILLed predecessor's group
 *   simply dies with it) and never shares partitions.
 * - **A custom partition assigner** (`AbacusOwnedKeyGroups`): each member announces the key
 *   groups it owns in its subscription's user data, and the assigner hands every member
 *   exactly those partitions (never a partition it did not claim). So the worker reads
 *   precisely its key groups, whatever the broker's view of the group.
 * - **Group offsets are never committed**: RocksDB holds the positions, atomically with the
 *   state they produced. On every (re)join — the first one and any after a broker restart or
 *   a coordinator move — the consumer seeks each partition to the next offset it has not yet
 *   handed out (or the task's start position). Records below that offset (a fetch that raced
 *   the seek) are dropped, so the task never sees a record twice from one source instance,
 *   and never misses one.
 *
 * - **Every partition is claimed, the unowned ones paused**: the member is alone in its group,
 *   so it is assigned all K partitions once and never rejoins when the assignment document
 *   changes. `addGroups` seeks a partition to its restored position and resumes it;
 *   `removeGroups` pauses it and drops what was buffered for it. The groups the worker keeps
 *   never stop for a rebalance (docs/adr/0005-rescale-hand-over.md).
 *
 * Backpressure: kafkajs pushes batches; they wait in a bounded buffer that `poll` drains.
 * Fetching pauses when the buffer is full, and when the task calls `pause()` (e.g. while the
 * sink is failing), and resumes when both allow. Paused fetches do not lose records: kafkajs
 * drops results for paused partitions without advancing their offsets.
 */
export class KafkaKeyedSource implements Source {
  private supervisor?: SupervisedConsumer;
  private readonly log: LogFn;
  private readonly owned: Set<number>;
  /** Next offset to hand out, per partition; absent = from the beginning. */
  private readonly expected = new Map<number, bigint>();
  /** Events of the bundle at the `expected` offset that were already consumed (a position `<offset>:<k>`). */
  private readonly consumed = new Map<number, number>();
  private readonly highWatermark = new Map<number, bigint>();
  private buffer: SourceRecord[] = [];
  private head = 0;
  private pausedForBuffer = false;
  private pausedByTask = false;
  private wake?: () => void;
  private closed = false;

  constructor(private readonly opts: KafkaKeyedSourceOptions) {
    this.log = opts.log ?? stderrLog;
    this.owned = new Set(opts.keyGroups);
    for (const g of opts.keyGroups) {
      if (!Number.isInteger(g) || g < 0 || g >= opts.job.keyGroups) throw new RangeError(`key group ${g} is outside 0..${opts.job.keyGroups - 1}`);
    }
  }

  async start(positions: ReadonlyMap<string, string>): Promise<void> {
    for (const [partition, position] of positions) {
      const g = keyGroupOfPartition(partition);
      if (g !== undefined && this.owned.has(g)) this.resumeAt(g, position);
    }
    const { kafka, job, ordinal } = this.opts;
    const client = createKafka(kafka, `count-${ordinal}`, this.log);
    // Claim every partition: ownership changes are pauses and seeks, never a rejoin.
    const all = Array.from({ length: job.keyGroups }, (_, g) => g);
    this.supervisor = new SupervisedConsumer(
      'keyed source',
      () => {
        // A fresh group per consumer: it never waits for a predecessor's session to expire.
        const groupId = `${kafka.countGroupPrefix}-${ordinal}-${randomBytes(4).toString('hex')}`;
        const consumer = client.consumer({
          groupId,
          partitionAssigners: [ownedPartitionsAssigner(all)],
          sessionTimeout: 30_000,
          heartbeatInterval: 3_000,
          maxBytesPerPartition: 1024 * 1024,
          maxBytes: 16 * 1024 * 1024,
          maxWaitTimeInMs: 200,
          allowAutoTopicCreation: false,
          retry: NO_RESTART_RETRY,
        });
        consumer.on(consumer.events.GROUP_JOIN, (event) => {
          const assigned = event.payload.memberAssignment[kafka.keyedTopic] ?? [];
          kafkaMetrics.rejoins.inc();
          for (const partition of assigned) {
            const next = this.expected.get(partition);
            if (next !== undefined && this.owned.has(partition)) consumer.seek({ topic: kafka.keyedTopic, partition, offset: next.toString() });
          }
          // Pauses belong to the subscription state, which a join resets: apply ours again.
          this.applyPause(consumer);
          const missing = [...this.owned].filter((g) => !assigned.includes(g));
          this.log(missing.length === 0 ? 'info' : 'error', 'keyed source joined its group', { groupId, partitions: assigned.length, missing });
        });
        return consumer;
      },
      async (consumer) => {
        await consumer.subscribe({ topics: [kafka.keyedTopic], fromBeginning: true });
        await consumer.run({
          autoCommit: false,
          partitionsConsumedConcurrently: 1,
          eachBatch: (payload) => {
            this.accept(payload);
            return Promise.resolve();
          },
        });
      },
      this.log,
    );
    await this.supervisor.start();
    this.log('info', 'keyed source started', { topic: kafka.keyedTopic, keyGroups: this.owned.size, resumed: this.expected.size });
  }

  /**
   * Starts reading more key groups from the given positions (absent = from the beginning),
   * without disturbing the others: seek, then resume those partitions.
   */
  addGroups(groups: readonly number[], positions: ReadonlyMap<string, string>): void {
    for (const g of groups) {
      if (!Number.isInteger(g) || g < 0 || g >= this.opts.job.keyGroups) throw new RangeError(`key group ${g} is outside 0..${this.opts.job.keyGroups - 1}`);
      this.owned.add(g);
      // Offset 0 below the log start is reset to the earliest offset (the consumer reads from the beginning).
      this.seek(g, this.resumeAt(g, positions.get(`kg:${g}`) ?? '0'));
    }
    this.applyPause();
  }

  /** Stops reading key groups: pause their partitions and forget what was buffered for them. */
  removeGroups(groups: readonly number[]): void {
    const gone = new Set(groups);
    for (const g of groups) {
      this.owned.delete(g);
      this.expected.delete(g);
      this.consumed.delete(g);
      metrics.inputLagRecords.remove({ partition: `kg:${g}` });
    }
    this.applyPause();
    const kept = this.buffer.slice(this.head).filter((r) => r.keyGroup === undefined || !gone.has(r.keyGroup));
    this.buffer = kept;
    this.head = 0;
    kafkaMetrics.sourceBuffered.set(this.buffer.length);
  }

  /** Key groups read now. */
  groups(): number[] {
    return [...this.owned].sort((a, b) => a - b);
  }

  /** Records where reading group `g` resumes (a committed position); returns the offset to seek to. */
  private resumeAt(g: number, position: string): bigint {
    const { offset, consumed } = parseKeyedPosition(position);
    this.expected.set(g, offset);
    if (consumed > 0) this.consumed.set(g, consumed);
    else this.consumed.delete(g);
    return offset;
  }

  /**
   * The events of a bundle the router wrote; undefined when its bytes are not a bundle this
   * worker reads, which is logged and leaves the record to be counted as one (invalid) event,
   * so it goes to the dead-letter topic with its origin instead of stopping the group.
   */
  private unbundle(value: Buffer, origin: string): BundledEvent[] | undefined {
    try {
      return decodeBundle(value);
    } catch (err) {
      this.log('error', 'a keyed-topic record marked as a bundle cannot be read; it goes to the dead-letter topic', { origin, error: (err as Error).message });
      return undefined;
    }
  }

  private seek(partition: number, offset: bigint): void {
    const consumer = this.supervisor?.consumer;
    if (consumer === undefined) return; // the next join seeks
    try {
      consumer.seek({ topic: this.opts.kafka.keyedTopic, partition, offset: offset.toString() });
    } catch (err) {
      // Not joined yet: the GROUP_JOIN handler seeks every owned partition to its expected offset.
      this.log('debug', 'seek deferred to the next join', { partition, error: (err as Error).message });
    }
  }

  private accept({ batch }: EachBatchPayload): void {
    const p = batch.partition;
    if (!this.owned.has(p)) return; // a fetch that raced removeGroups: never count a group this worker gave up
    this.highWatermark.set(p, BigInt(batch.highWatermark));
    const topic = batch.topic;
    let next = this.expected.get(p);
    let added = 0;
    for (const m of batch.messages) {
      const offset = BigInt(m.offset);
      if (next !== undefined && offset < next) continue; // re-fetched before our seek took effect
      // Events of the bundle at the resume offset that were counted before the last commit.
      const consumed = next === offset ? this.consumed.get(p) ?? 0 : 0;
      this.consumed.delete(p);
      next = offset + 1n;
      const ts = Number(m.timestamp);
      const bundle = m.headers?.[BUNDLE_HEADER];
      const events = bundle === undefined || m.value === null ? undefined : this.unbundle(m.value, `${topic}/${p}@${m.offset}`);
      const routedFrom = headerText(m.headers?.[ROUTED_FROM_HEADER]);
      if (events === undefined) {
        this.buffer.push({
          value: m.value ?? Buffer.alloc(0),
          ingestTimeMs: Number.isFinite(ts) && ts >= 0 ? ts : 0,
          partition: `kg:${p}`,
          keyGroup: p,
          nextPosition: next.toString(),
          // The input record it was routed from, when the router says (a record a keyed producer wrote: itself).
          origin: bundle === undefined ? routedFrom ?? `${topic}/${p}@${m.offset}` : `${topic}/${p}@${m.offset}`,
        });
        added++;
        continue;
      }
      const partition = `kg:${p}`;
      for (let i = consumed; i < events.length; i++) {
        const e = events[i]!;
        const nextPosition = i + 1 < events.length ? formatKeyedPosition(offset, i + 1) : next.toString();
        this.buffer.push(new BundledRecord(e.value, e.ingestTimeMs, partition, p, nextPosition, routedFrom, e.offsetDelta, `${topic}/${p}@${m.offset}`, i));
        added++;
      }
    }
    if (next !== undefined) this.expected.set(p, next);
    if (added > 0) {
      kafkaMetrics.sourceBuffered.set(this.buffer.length - this.head);
      this.updateLag(p);
      this.wake?.();
    }
    if (!this.pausedForBuffer && this.buffer.length - this.head >= (this.opts.maxBuffered ?? 50_000)) {
      this.pausedForBuffer = true;
      kafkaMetrics.pauses.inc({ reason: 'buffer' });
      this.applyPause();
    }
  }

  async poll(max: number): Promise<SourceRecord[] | null> {
    if (this.closed) return [];
    if (this.head === this.buffer.length) {
      // Nothing buffered: wait briefly for a batch rather than letting the task spin.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, 100);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.wake = done;
      });
      this.wake = undefined;
    }
    const end = Math.min(this.buffer.length, this.head + Math.max(1, max));
    const out = this.buffer.slice(this.head, end);
    this.head = end;
    if (this.head === this.buffer.length) {
      this.buffer = [];
      this.head = 0;
    } else if (this.head > 65_536) {
      this.buffer = this.buffer.slice(this.head);
      this.head = 0;
    }
    kafkaMetrics.sourceRecords.inc(out.length);
    kafkaMetrics.sourceBuffered.set(this.buffer.length - this.head);
    if (this.pausedForBuffer && this.buffer.length - this.head < (this.opts.maxBuffered ?? 50_000) / 2) {
      this.pausedForBuffer = false;
      this.applyPause();
    }
    return out;
  }

  pause(): void {
    if (this.pausedByTask) return;
    this.pausedByTask = true;
    kafkaMetrics.pauses.inc({ reason: 'task' });
    this.applyPause();
  }

  resume(): void {
    if (!this.pausedByTask) return;
    this.pausedByTask = false;
    this.applyPause();
  }

  /** Pauses everything (backpressure), or exactly the partitions this worker does not own. */
  private applyPause(consumer = this.supervisor?.consumer): void {
    const paused = this.pausedByTask || this.pausedForBuffer;
    kafkaMetrics.paused.set(paused ? 1 : 0);
    if (consumer === undefined) return; // re-applied on the next join
    const topic = this.opts.kafka.keyedTopic;
    if (paused) {
      consumer.pause([{ topic }]);
      return;
    }
    consumer.resume([{ topic }]);
    const unowned = Array.from({ length: this.opts.job.keyGroups }, (_, g) => g).filter((g) => !this.owned.has(g));
    if (unowned.length > 0) consumer.pause([{ topic, partitions: unowned }]);
  }

  private updateLag(p: number): void {
    const hw = this.highWatermark.get(p);
    const next = this.expected.get(p);
    if (hw === undefined || next === undefined) return;
    const lag = hw - next;
    metrics.inputLagRecords.set({ partition: `kg:${p}` }, Number(lag > 0n ? lag : 0n));
  }

  /** Positions handed out so far (for diagnostics and tests). */
  positions(): Map<string, string> {
    return new Map([...this.expected].map(([p, o]) => [`kg:${p}`, formatKeyedPosition(o, this.consumed.get(p) ?? 0)]));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wake?.();
    await this.supervisor?.stop();
  }
}

/** `kg:17` → 17. */
export function keyGroupOfPartition(partition: string): number | undefined {
  const m = /^kg:(\d+)$/.exec(partition);
  return m === null ? undefined : Number(m[1]);
}

/**
 * A partition assigner that gives each group member exactly the partitions it claimed in its
 * subscription's user data (a JSON list). A partition claimed twice goes to the member with
 * the smallest id and is logged; an unclaimed one is left unassigned.
 */
export function ownedPartitionsAssigner(owned: readonly number[]): PartitionAssigner {
  const userData = Buffer.from(JSON.stringify(owned));
  return ({ cluster, logger }) => ({
    name: ASSIGNER_NAME,
    version: 1,
    assign({ members, topics }) {
      const taken = new Map<number, string>();
      const sorted = [...members].sort((a, b) => (a.memberId < b.memberId ? -1 : 1));
      return Promise.resolve(sorted.map((member) => {
        const meta = AssignerProtocol.MemberMetadata.decode(member.memberMetadata);
        const claimed = meta?.userData !== undefined && meta.userData.length > 0 ? (JSON.parse(meta.userData.toString()) as number[]) : [];
        const assignment: Record<string, number[]> = {};
        for (const topic of topics) {
          const exists = new Set(cluster.findTopicPartitionMetadata(topic).map((m) => m.partitionId));
          assignment[topic] = claimed.filter((p) => {
            if (!exists.has(p)) return false;
            const other = taken.get(p);
            if (other !== undefined) {
              logger.error('partition claimed by two members of one group', { partition: p, members: [other, member.memberId] });
              return false;
            }
            taken.set(p, member.memberId);
            return true;
          });
        }
        return { memberId: member.memberId, memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 1, assignment, userData: Buffer.alloc(0) }) };
      }));
    },
    protocol({ topics }) {
      return { name: ASSIGNER_NAME, metadata: AssignerProtocol.MemberMetadata.encode({ version: 1, topics, userData }) };
    },
  });
}

/**
 * One event of a bundle. Its origin names the input record it was routed from
 * (`events/3@1234`), built only when asked (a dead-letter report), not for every event.
 */
class BundledRecord implements SourceRecord {
  constructor(
    readonly value: Buffer,
    readonly ingestTimeMs: number,
    readonly partition: string,
    readonly keyGroup: number,
    readonly nextPosition: string,
    private readonly routedFrom: string | undefined,
    private readonly offsetDelta: number,
    private readonly keyedOrigin: string,
    private readonly index: number,
  ) {}

  get origin(): string {
    const at = this.routedFrom === undefined ? -1 : this.routedFrom.lastIndexOf('@');
    if (at < 0) return `${this.keyedOrigin} event ${this.index}`;
    return `${this.routedFrom!.slice(0, at)}@${BigInt(this.routedFrom!.slice(at + 1)) + BigInt(this.offsetDelta)}`;
  }
}

function headerText(h: Buffer | string | Array<Buffer | string> | undefined): string | undefined {
  const v = Array.isArray(h) ? h[0] : h;
  return v === undefined ? undefined : v.toString();
}
