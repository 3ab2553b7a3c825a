import { GROUP, KIND, PLURAL, VERSION } from '../api/abacusjob';

/** The API resources the operator watches, and the collection paths the library's watches take. */
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
} satisfies Record<string, Resource>;

export const apiVersionOf = (r: Resource) => (r.group === '' ? r.version : `${r.group}/${r.version}`);

export function collectionPath(r: Resource, namespace?: string): string {
  const base = r.group === '' ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
  return `${base}${namespace === undefined ? '' : `/namespaces/${namespace}`}/${r.plural}`;
}
