import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse } from 'yaml';
import { specSchema, type AbacusJob } from '../../operator/api/abacusjob';
import { repoRoot } from '../../operator/api/gen-crd';
import { applyDefaults } from '../../operator/api/schema';

/** An example as the API server would store it: defaults applied, metadata filled in. */
export function loadExample(file: string, namespace = 'team-a'): AbacusJob {
  const doc = parse(readFileSync(resolve(repoRoot(), 'examples', file), 'utf8')) as AbacusJob;
  return withDefaults({ ...doc, metadata: { ...doc.metadata, namespace, uid: `uid-${doc.metadata.name}`, generation: 1 } });
}

export function withDefaults(job: AbacusJob): AbacusJob {
  return { ...job, spec: applyDefaults(specSchema.json, job.spec) as AbacusJob['spec'] };
}

/** The smallest valid job, defaulted. */
export function minimalJob(spec: Record<string, unknown> = {}, name = 'j'): AbacusJob {
  return withDefaults({
    apiVersion: 'abacus.dev/v1alpha1',
    kind: 'AbacusJob',
    metadata: { name, namespace: 'ns', uid: 'uid-1', generation: 1 },
    spec: {
      image: 'abacus:test',
      source: { kafka: { brokers: ['k:9092'], topic: 'events' } },
      sink: { cassandra: { contactPoints: ['c'] } },
      ...spec,
    } as unknown as AbacusJob['spec'],
  });
}
