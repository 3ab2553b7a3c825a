import { GROUP, KIND, PLURAL, VERSION } from '../api/abacusjob';

/** The API resources the operator touches, and their REST paths. */
export interface Resource {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly kind: string;
}

export const RESOURCES = {
  abacusJob: { group: GROUP, version: VERSION, plural: PLURAL, kind: KIND },
  statefulSet: { group: 'apps', version: 'v1', plural: 'statefulsets', kind: 'StatefulSet' },
  service: { group: '', version: 'v1', plural: 'services', kind: 'Service' },
  configMap: { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap' },
  podDisruptionBudget: { group: 'policy', version: 'v1', plural: 'poddisruptionbudgets', kind: 'PodDisruptionBudget' },
  lease: { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', kind: 'Lease' },
  event: { group: '', version: 'v1', plural: 'events', kind: 'Event' },
} satisfies Record<string, Resource>;

export function resourceOfKind(apiVersion: string, kind: string): Resource {
  const r = Object.values(RESOURCES).find((x) => x.kind === kind && (x.group === '' ? x.version : `${x.group}/${x.version}`) === apiVersion);
  if (r === undefined) throw new Error(`the operator does not manage ${apiVersion} ${kind}`);
  return r;
}

export function collectionPath(r: Resource, namespace?: string): string {
  const base = r.group === '' ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
  return `${base}${namespace === undefined ? '' : `/namespaces/${namespace}`}/${r.plural}`;
}

export function objectPath(r: Resource, namespace: string, name: string, subresource?: string): string {
  return `${collectionPath(r, namespace)}/${encodeURIComponent(name)}${subresource === undefined ? '' : `/${subresource}`}`;
}
