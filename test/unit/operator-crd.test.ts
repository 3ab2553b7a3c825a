import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { DURATION_PATTERN, SIZE_PATTERN } from '../../common/duration';
import { customResourceDefinition, specSchema } from '../../operator/api/abacusjob';
import { CRD_FILES, renderCrdYaml, repoRoot } from '../../operator/api/gen-crd';
import type { JsonSchema } from '../../operator/api/schema';

test('crds/ and the chart CRD match operator/api (run `npm run gen:crd` after changing the schema)', () => {
  const expected = renderCrdYaml();
  for (const file of CRD_FILES) {
    const actual = readFileSync(resolve(repoRoot(), file), 'utf8');
    assert.equal(actual, expected, `${file} drifted from operator/api/abacusjob.ts: run npm run gen:crd`);
  }
});

type Version = {
  schema: { openAPIV3Schema: JsonSchema };
  subresources: { status: object; scale: Record<string, string> };
  additionalPrinterColumns: { name: string; jsonPath: string }[];
};
const crd = parse(renderCrdYaml()) as { spec: { scope: string; names: { shortNames: string[] }; versions: Version[] } };
const version = crd.spec.versions[0]!;
const spec = version.schema.openAPIV3Schema.properties!.spec!;

test('the CRD is namespaced, has a short name, status and scale subresources', () => {
  assert.equal(crd.spec.scope, 'Namespaced');
  assert.deepEqual(crd.spec.names.shortNames, ['abj']);
  assert.deepEqual(version.subresources.status, {});
  assert.deepEqual(version.subresources.scale, {
    specReplicasPath: '.spec.replicas',
    statusReplicasPath: '.status.replicas',
    labelSelectorPath: '.status.selector',
  });
});

test('printer columns: replicas, ready, phase, input lag, last checkpoint, age', () => {
  assert.deepEqual(
    version.additionalPrinterColumns.map((c) => c.name),
    ['Replicas', 'Ready', 'Phase', 'Input Lag', 'Last Checkpoint', 'Age'],
  );
});

function walk(schema: JsonSchema, path: string, visit: (s: JsonSchema, path: string) => void): void {
  visit(schema, path);
  for (const [k, v] of Object.entries(schema.properties ?? {})) walk(v, `${path}.${k}`, visit);
  if (schema.items) walk(schema.items, `${path}[]`, visit);
}

test('structural schema: every spec and status field has a type and a description', () => {
  const status = version.schema.openAPIV3Schema.properties!.status!;
  for (const root of [spec, status]) {
    walk(root, '', (s, path) => {
      assert.ok(s.type !== undefined || s['x-kubernetes-int-or-string'], `${path} has no type`);
      assert.ok(s.description !== undefined && s.description.length > 0, `${path} has no description`);
    });
  }
});

test('CEL rules: keyGroups immutable, replicas bounded by keyGroups, name length', () => {
  assert.deepEqual(spec.properties!.keyGroups!['x-kubernetes-validations']!.map((r) => r.rule), ['self == oldSelf']);
  assert.ok(spec['x-kubernetes-validations']!.some((r) => r.rule === 'self.replicas <= self.keyGroups'));
  assert.equal(spec.properties!.replicas!.minimum, 1);
  const root = version.schema.openAPIV3Schema;
  assert.ok(root['x-kubernetes-validations']!.some((r) => r.rule.includes('size(self.metadata.name)')));
});

test('durations and sizes carry the shared patterns', () => {
  const p = spec.properties!;
  for (const d of [p.window!, p.dedup!.properties!.retention!, p.uniques!.properties!.retention!, p.checkpoints!.properties!.interval!]) {
    assert.equal(d.pattern, DURATION_PATTERN);
  }
  for (const s of [p.maxEventBytes!, ...Object.values(p.rocksdb!.properties!).filter((x) => x.type === 'string')]) {
    assert.equal(s.pattern, SIZE_PATTERN);
  }
  const re = new RegExp(DURATION_PATTERN);
  for (const ok of ['1s', '500ms', '7d', '1.5h']) assert.ok(re.test(ok), ok);
  for (const bad of ['1', 's', '1 s', '1w', '-1s']) assert.ok(!re.test(bad), bad);
});

test('source and sink are required; nested defaults apply through defaulted parents', () => {
  assert.deepEqual(spec.required, ['image', 'source', 'sink']);
  assert.deepEqual(spec.properties!.source!.required, ['kafka']);
  for (const parent of ['rocksdb', 'storage', 'scheduling', 'metrics', 'dedup', 'uniques', 'facets']) {
    assert.deepEqual(spec.properties![parent]!.default, {}, `${parent} needs default {} for its children's defaults to apply`);
  }
});

test('schema object and CRD object agree (one source)', () => {
  const fromCrd = (customResourceDefinition() as { spec: { versions: Version[] } }).spec.versions[0]!.schema.openAPIV3Schema.properties!.spec;
  assert.deepEqual(fromCrd, specSchema.json);
});
