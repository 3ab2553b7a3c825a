import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { resolveJobConfig } from '../../common/job-config';
import { keyGroupOf, routingKey } from '../../common/keygroups';
import { parseEvent } from '../../worker/engine/event';
import { KafkaDeadLetterSink } from '../../worker/io/kafka-dead-letter';
import { KafkaRouter } from '../../worker/io/kafka-router';
import { KafkaKeyedSource } from '../../worker/io/kafka-source';
import type { SourceRecord } from '../../worker/io/types';
import { nativeKeyGroups, routeValidator } from '../../worker/runtime/worker-process';
import { requireTestEnv } from '../support/env';
import { testInput } from '../support/events';
import { createTopic, kafkaClient, produce } from '../support/kafka';

/**
 * The route stage's bundles on the real broker: the router writes the events of a key group
 * as bundles, and the count stage's source hands back every valid input event once, in its
 * input order per key group, with its own ingest time and input origin — and, started from
 * a position inside a bundle (`<offset>:<k>`, what a commit after part of a bundle stores),
 * exactly the events after it. The expectations come from the input and the contract's key
 * group function, not from the bundle code.
 */

const env = requireTestEnv();
const run = Date.now().toString(36);
const closers: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined);
});

const KEY_GROUPS = 4;
const MAX_EVENT_BYTES = 4096;

for (const [engine, bundles] of [['records', true], ['native', true], ['native', false]] as const) {
  test(`routed ${bundles ? 'bundles read' : 'records, one per event (kafka.bundles: false), read'} back as the input's valid events${bundles ? ', and a position inside a bundle resumes after it' : ''} [${engine}]`, { timeout: 240_000 }, async () => {
    const topic = `bundles-${engine}-${bundles}-${run}`;
    const config = resolveJobConfig({
      name: `bundles-${engine}-${bundles}-${run}`,
      keyGroups: KEY_GROUPS,
      maxEventBytes: MAX_EVENT_BYTES,
      state: { engine },
      kafka: { brokers: [env.kafka], topic, bundles },
    });
    const kafka = config.kafka!;
    await createTopic(env.kafka, topic, 1);
    await createTopic(env.kafka, kafka.keyedTopic, KEY_GROUPS);
    await createTopic(env.kafka, kafka.deadLetterTopic, 1);
    const values = testInput({ seed: 31, nowSec: Math.floor(Date.now() / 1000), valid: 1500, dupRate: 0.05, maxEventBytes: MAX_EVENT_BYTES, customers: 50 });
    const produced = await produce(env.kafka, topic, values, { partitions: 1, seed: 3 });

    // What the keyed topic must hold, per key group in input order: each valid input record (input offset = its index).
    const expected = new Map<number, Array<{ value: string; ingestTimeMs: number; origin: string }>>();
    let invalid = 0;
    produced.forEach((p, offset) => {
      const parsed = parseEvent(Buffer.from(p.value), { maxEventBytes: MAX_EVENT_BYTES, facets: config.facets, level: config.level });
      if (!parsed.ok) return void invalid++;
      const g = keyGroupOf(routingKey(config.level, parsed.event.companyId, parsed.event.statisticId, parsed.event.customerId), KEY_GROUPS);
      expected.set(g, [...(expected.get(g) ?? []), { value: p.value, ingestTimeMs: p.ingestTimeMs, origin: `${topic}/0@${offset}` }]);
    });
    assert.ok(invalid > 0, 'the input has invalid records, which the router must leave out');

    const log = () => undefined;
    const deadLetter = await KafkaDeadLetterSink.connect(kafka, log);
    closers.push(() => deadLetter.close());
    const router = new KafkaRouter({ job: config, kafka, validate: routeValidator(config), keyGroupsOf: nativeKeyGroups(config), deadLetter, log });
    await router.start();
    closers.push(() => router.stop());

    const all = [...Array(KEY_GROUPS).keys()];
    const whole = await readAll(config, all, new Map(), [...expected.values()].reduce((n, l) => n + l.length, 0));
    for (const g of all) {
      const got = whole.filter((r) => r.keyGroup === g).map((r) => ({ value: r.value.toString('utf8'), ingestTimeMs: r.ingestTimeMs, origin: r.origin }));
      assert.deepEqual(got, expected.get(g) ?? [], `key group ${g}: the valid input events in input order, with their ingest times and origins`);
    }
    const admin = kafkaClient(env.kafka).admin();
    await admin.connect();
    const records = (await admin.fetchTopicOffsets(kafka.keyedTopic)).reduce((n, p) => n + Number(p.high), 0);
    await admin.disconnect();
    if (!bundles) {
      assert.equal(records, whole.length, 'one keyed-topic record per event');
      assert.ok(whole.every((r) => !r.nextPosition.includes(':')));
      return;
    }
    assert.ok(records * 20 <= whole.length, `${whole.length} events in ${records} keyed-topic records: bundled`);

    // A position inside a bundle: resume there and get exactly the events after it.
    const inside = whole.findIndex((r) => r.nextPosition.includes(':'));
    assert.ok(inside >= 0, 'some event is not the last of its bundle');
    const at = whole[inside]!;
    const rest = whole.slice(inside + 1).filter((r) => r.keyGroup === at.keyGroup);
    const resumed = await readAll(config, [at.keyGroup!], new Map([[`kg:${at.keyGroup}`, at.nextPosition]]), rest.length);
    assert.deepEqual(resumed.map((r) => [r.value.toString('utf8'), r.nextPosition]), rest.map((r) => [r.value.toString('utf8'), r.nextPosition]));
  });
}

/** Reads `groups` from `positions` with the count stage's source until `count` events came (and a moment more, to see none extra). */
async function readAll(config: ReturnType<typeof resolveJobConfig>, groups: number[], positions: Map<string, string>, count: number): Promise<SourceRecord[]> {
  const source = new KafkaKeyedSource({ job: config, kafka: config.kafka!, keyGroups: groups, ordinal: 0, log: () => undefined });
  await source.start(positions);
  const out: SourceRecord[] = [];
  try {
    const deadline = Date.now() + 120_000;
    while (out.length < count && Date.now() < deadline) out.push(...((await source.poll(1000)) ?? []));
    assert.equal(out.length, count, 'every event arrived');
    const quiet = Date.now() + 1500;
    while (Date.now() < quiet) out.push(...((await source.poll(1000)) ?? []));
    assert.equal(out.length, count, 'and no event twice');
  } finally {
    await source.close();
  }
  return out;
}
