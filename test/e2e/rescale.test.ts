import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { readCounts } from '../support/cassandra';
import { testInput } from '../support/events';
import type { Produced } from '../support/kafka';
import { referenceRun } from '../support/reference';
import { Feeder, MAX_EVENT_BYTES, percentiles, RescaleCluster } from '../support/rescale-cluster';
import { kubeEnv, kubectl, metricValue } from '../integration/operator-harness';

/**
 * `kubectl scale abacusjob/x --replicas N` end to end: the operator on the real
 * kube-apiserver hands key groups over between worker processes (a kubelet stand-in runs one
 * per StatefulSet ordinal) on the real Kafka, Cassandra and S3, while input keeps flowing.
 * Duplicates spread over the whole input make every moved group's dedup state matter: a
 * group that lost it, or was counted by two workers, would show in the final counts, which
 * must equal the independent reference.
 */

const cluster = new RescaleCluster();
const env = cluster.env;
const namespace = cluster.namespace;

after(() => cluster.close());

async function assertCountsEqualReference(keyspace: string, produced: readonly Produced[]): Promise<void> {
  const expected = referenceRun(produced, { level: 'account', facets: { exclude: ['tags'] }, maxEventBytes: MAX_EVENT_BYTES });
  assert.ok(expected.duplicates > 0, 'the input has duplicates to catch lost dedup state');
  let got = await readCounts(env.cassandra, keyspace, 'counts', 'account');
  const deadline = Date.now() + 120_000;
  while (JSON.stringify(got) !== JSON.stringify(expected.rows) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 1000));
    got = await readCounts(env.cassandra, keyspace, 'counts', 'account');
  }
  assert.deepEqual(got, expected.rows);
}

test('kubectl scale 2 → 5 → 3 → 1 while input flows: only moved groups move, counts exact', async () => {
  const { job, topic, keyspace } = await cluster.setUpJob('scale', 2, 16);
  const values = testInput({ seed: 8, nowSec: Math.floor(Date.now() / 1000), valid: 6000, dupRate: 0.1, maxEventBytes: MAX_EVENT_BYTES, customers: 200 });
  const feeder = new Feeder(env.kafka, topic, values, 150, 400);

  const timings: string[] = [];
  for (const replicas of [5, 3, 1]) {
    const before = cluster.status(job)?.assignment?.generation ?? 0;
    cluster.scale(job, replicas);
    const ms = await cluster.settled(job, replicas);
    const after = cluster.status(job)!.assignment!.generation;
    assert.ok(after > before, `the assignment generation moved (${before} → ${after})`);
    timings.push(`→${replicas}: ${(ms / 1000).toFixed(1)} s`);
  }
  const produced = await feeder.finish();
  await assertCountsEqualReference(keyspace, produced);
  // Events mark the hand-overs.
  const events = kubectl(['get', 'events', '-n', namespace, '--field-selector', `involvedObject.name=${job}`, '-o', 'json'], undefined, kubeEnv().kubeconfig);
  const reasons = (JSON.parse(events.stdout) as { items: Array<{ reason: string }> }).items.map((e) => e.reason);
  assert.ok(reasons.includes('RescaleStarted') && reasons.includes('RescaleFinished'), reasons.join(','));
  // The operator measured every move: the pause per moved group and the groups moved.
  const metrics = await cluster.operator.metrics();
  const moved = metricValue(metrics, 'abacus_operator_handover_key_groups_moved_total');
  // 2→5: workers 0 and 1 keep 4 and 3 of their 8 (quotas 4,3,3,3,3), 9 move; 5→3: workers 3 and 4's 6 move; 3→1: the other 10.
  assert.equal(moved, 9 + 6 + 10, 'exactly the planned moves');
  const moves = RescaleCluster.moves(cluster.operator);
  const p = percentiles(moves.map((m) => m.pauseMs));
  process.stderr.write(`rescale timings: ${timings.join(', ')}; ${moves.length} moved groups, pause p50 ${p.p50} ms, p99 ${p.p99} ms, max ${p.max} ms; ${RescaleCluster.stepSummary(moves)}\n`);
});

test('workers SIGKILLed before and after their release, and the operator killed, in the middle of hand-overs: the moves finish, counts exact', async () => {
  const { job, topic, keyspace, kubelet } = await cluster.setUpJob('kill', 2, 12);
  const values = testInput({ seed: 9, nowSec: Math.floor(Date.now() / 1000), valid: 4000, dupRate: 0.1, maxEventBytes: MAX_EVENT_BYTES, customers: 150 });
  const feeder = new Feeder(env.kafka, topic, values, 150, 400);

  // 2 → 4: kill the old owner 0 as soon as it reported a release. Its groups now count on
  // their new owner: the restarted worker must not send their older totals again.
  const reported = cluster.untilReport(job, 0, 'a release reported by worker 0', (r) => Object.keys(r.released).length > 0, 120_000);
  cluster.scale(job, 4);
  await reported;
  await kubelet.workers.get(0)!.kill();
  await cluster.settled(job, 4);

  // 4 → 2: kill the old owner 3 as soon as a group of it is to be released (the restarted
  // worker releases it from its committed state), and the operator once the hand-over has
  // started; a new one finishes it.
  const releasing = cluster.untilAssignment(job, 'a release by worker 3', (a) => a.handover?.moves.some((m) => m.phase === 'release' && m.from === 3) === true, 120_000);
  const started = cluster.untilAssignment(job, 'the hand-over to 2 started', (a) => a.handover?.targetReplicas === 2, 60_000);
  cluster.scale(job, 2);
  await started;
  await cluster.replaceOperator(2000);
  await releasing;
  await kubelet.workers.get(3)!.kill();
  await cluster.settled(job, 2);

  const produced = await feeder.finish();
  await assertCountsEqualReference(keyspace, produced);
});
