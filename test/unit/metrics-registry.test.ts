import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRegistry, eventLoopLiveness } from '../../common/metrics';

test('default process metrics carry their standard names, without a doubled prefix', async () => {
  const text = await createRegistry().metrics();
  assert.match(text, /^process_cpu_seconds_total /m);
  assert.match(text, /^process_resident_memory_bytes /m);
  assert.match(text, /^nodejs_eventloop_lag_p99_seconds /m);
  assert.doesNotMatch(text, /process_process_/);
  const gaugesNamedLikeCounters = (await createRegistry().getMetricsAsJSON()).filter((m) => String(m.type) === 'gauge' && m.name.endsWith('_total'));
  assert.deepEqual(gaugesNamedLikeCounters.map((m) => m.name), []);
});

test('liveness fails once the loop has not run for longer than the limit', () => {
  let t = 1_000_000;
  const live = eventLoopLiveness(30_000, () => t);
  assert.equal(live(), true);
  t += 30_000;
  assert.equal(live(), true, 'exactly the limit is still live');
  t += 1;
  assert.equal(live(), false, 'the 1 s timer never ran while the clock moved 30 s');
});
