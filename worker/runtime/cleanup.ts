import { parseArgs } from 'node:util';
import { CLEANUP_KEY, type CleanupReport } from '../../common/cleanup';
import { ConfigError } from '../../common/errors';
import { sleep } from '../../common/sleep';
import { loadJobConfig, type JobConfig } from '../../common/job-config';
import { objectStoreFor } from '../checkpoint/s3-object-store';
import { backoffMs, createKafka, jobKafkaObjects, kafkaSetupError, stderrLog, type LogFn } from '../io/kafka-client';
import { KubeConfigMaps } from '../io/kube-channel';

/**
 * `abacus cleanup`: spec.whenDeleted=Delete, performed with the job's own identity. The
 * operator runs it as a Kubernetes Job from the job's image, under the workers'
 * ServiceAccount, with the same Secrets mounted the same way as the workers — so the
 * operator never reads a Secret and needs no S3 or Kafka rights (docs/adr/0010).
 *
 * One attempt deletes every object under the job's checkpoint root, the job's route and
 * count consumer groups and its keyed topic (jobKafkaObjects), and says whether anything
 * is still there (Kafka deletes topics asynchronously). Attempts repeat, with backoff,
 * until nothing is left; each outcome is written to the report ConfigMap (common/cleanup.ts)
 * so that the operator can say what blocks the deletion and what to do.
 */

export interface CleanupOutcome {
  readonly done: boolean;
  readonly message: string;
}

/** One attempt: deletes what is left of the job's checkpoints and Kafka objects. Throws with a message naming the store and the fix. */
export async function deleteJobState(config: JobConfig, log: LogFn): Promise<CleanupOutcome> {
  const parts: string[] = [];
  let done = true;
  if (config.checkpoints !== undefined) {
    const store = objectStoreFor(config.checkpoints);
    try {
      const objects = await store.list('');
      if (objects.length > 0) await store.delete(objects.map((o) => o.key));
      const left = (await store.list('')).length;
      if (left > 0) done = false;
      parts.push(`deleted ${objects.length} checkpoint objects under ${store.description}${left > 0 ? ` (${left} appeared since; deleting again)` : ''}`);
    } catch (err) {
      throw new Error(
        `cannot delete the checkpoints under ${store.description}: ${(err as Error).message} — check that the store is reachable from the namespace and that the Secret named by spec.checkpoints.s3.credentialsSecretRef may list and delete there`,
      );
    } finally {
      store.close?.();
    }
  }
  const k = config.kafka;
  if (k !== undefined) {
    const admin = createKafka(k, 'cleanup', log).admin();
    try {
      await admin.connect();
      const wanted = jobKafkaObjects(k, (await admin.listGroups()).groups.map((g) => g.groupId));
      if (wanted.groups.length > 0) {
        await admin.deleteGroups(wanted.groups);
        parts.push(`deleted consumer groups ${wanted.groups.join(', ')}`);
      }
      const existing = new Set(await admin.listTopics());
      const present = wanted.topics.filter((t) => existing.has(t));
      if (present.length > 0) {
        await admin.deleteTopics({ topics: present, timeout: 30_000 });
        const still = new Set(await admin.listTopics());
        const pending = present.filter((t) => still.has(t));
        if (pending.length > 0) {
          done = false;
          parts.push(`waiting for Kafka to finish deleting topic ${pending.join(', ')}`);
        } else parts.push(`deleted topic ${present.join(', ')}`);
      }
    } catch (err) {
      const known = kafkaSetupError(err, k);
      throw new Error(
        `cannot delete the job's Kafka topics and groups on ${k.brokers.join(',')}: ${known?.message ?? (err as Error).message} — ` +
          'check that the brokers are reachable and that the job\'s Kafka user may describe and delete its topic and groups',
      );
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }
  return { done, message: parts.length === 0 ? 'nothing to delete' : parts.join('; ') };
}

export interface CleanupLoopOptions {
  readonly config: JobConfig;
  readonly log: LogFn;
  /** Where each outcome is reported (the `<job>-cleanup` ConfigMap); none outside Kubernetes. */
  readonly report?: (r: CleanupReport) => Promise<void>;
  readonly clock?: () => number;
  /** Backoff between attempts (default 2 s doubling to 30 s). */
  readonly retryBaseMs?: number;
  readonly retryCapMs?: number;
}

/** Attempts until nothing is left (or `signal` aborts); resolves to the last outcome. */
export async function runCleanup(opts: CleanupLoopOptions, signal: AbortSignal): Promise<CleanupOutcome> {
  const clock = opts.clock ?? Date.now;
  const report = async (r: Omit<CleanupReport, 'atMs'>): Promise<void> => {
    if (opts.report === undefined) return;
    // A report that cannot be written must not stop the cleanup itself: logged, retried next time.
    await opts.report({ ...r, atMs: clock() }).catch((err: Error) => opts.log('warn', 'cannot write the cleanup report', { error: err.message }));
  };
  for (let attempt = 1; ; attempt++) {
    let outcome: CleanupOutcome;
    try {
      outcome = await deleteJobState(opts.config, opts.log);
    } catch (err) {
      const message = `attempt ${attempt} failed: ${(err as Error).message}; retrying`;
      opts.log('warn', message);
      await report({ state: 'blocked', message, attempts: attempt });
      await sleep(backoffMs(attempt, opts.retryBaseMs ?? 2_000, opts.retryCapMs ?? 30_000), signal);
      if (signal.aborted) return { done: false, message };
      continue;
    }
    opts.log('info', outcome.message, { attempt, done: outcome.done });
    await report({ state: outcome.done ? 'done' : 'running', message: outcome.message, attempts: attempt });
    if (outcome.done || signal.aborted) return outcome;
    await sleep(backoffMs(attempt, opts.retryBaseMs ?? 2_000, opts.retryCapMs ?? 30_000), signal);
  }
}

const CLEANUP_USAGE = `usage: abacus cleanup --config JOB.yaml [--kube-namespace NS --report CONFIGMAP [--kubeconfig FILE]]
  Deletes the job's checkpoints (checkpoints.s3 or checkpoints.dir) and its job-named Kafka
  objects (keyed topic, route and count groups), retrying until nothing is left. Credentials
  as for \`abacus worker\` (AWS_*, ABACUS_KAFKA_USERNAME/PASSWORD). Stop the job's workers first.`;

/** Runs `abacus cleanup`; resolves to the exit code (0 all deleted, 1 stopped before, 2 bad usage). */
export async function runCleanupCommand(argv: string[], log: LogFn = stderrLog): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, strict: true, options: { config: { type: 'string' }, 'kube-namespace': { type: 'string' }, report: { type: 'string' }, kubeconfig: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
    if (values.help === true) {
      process.stdout.write(`${CLEANUP_USAGE}\n`);
      return 0;
    }
    if (values.config === undefined) throw new ConfigError('--config', 'is missing', 'name the job file the workers run with');
    if ((values['kube-namespace'] === undefined) !== (values.report === undefined)) throw new ConfigError('--report/--kube-namespace', 'only one is given', 'give both, or neither');
  } catch (err) {
    process.stderr.write(`abacus cleanup: ${(err as Error).message}\n${CLEANUP_USAGE}\n`);
    return 2;
  }
  let config: JobConfig;
  try {
    config = loadJobConfig(values.config);
  } catch (err) {
    process.stderr.write(`abacus cleanup: ${(err as Error).message}\n`);
    return 2;
  }
  const namespace = values['kube-namespace'];
  const reportName = values.report;
  const configMaps = namespace === undefined ? undefined : new KubeConfigMaps(namespace, values.kubeconfig);
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    const outcome = await runCleanup(
      { config, log, ...(configMaps === undefined || reportName === undefined ? {} : { report: (r) => configMaps.write(reportName, CLEANUP_KEY, JSON.stringify(r)) }) },
      stop.signal,
    );
    return outcome.done ? 0 : 1;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}
