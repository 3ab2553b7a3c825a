import type { AbacusJobStatus } from '../api/abacusjob';

/**
 * What a spec change means for the running workers, decided before acting (the Flink
 * operator's DiffType): the reference is `status.lastApplied`, what this operator last put
 * into the cluster.
 */
export type ChangeKind = 'Initial' | 'None' | 'Scale' | 'Update' | 'ScaleAndUpdate' | 'StateIncompatible';

export interface Applied {
  readonly replicas: number;
  readonly image: string;
  readonly configHash: string;
  readonly templateHash: string;
  readonly stateFingerprint: string;
}

export interface Classification {
  readonly kind: ChangeKind;
  /** Human-readable list of what changed, for events. */
  readonly details: string[];
}

export function classifySpecChange(last: AbacusJobStatus['lastApplied'], desired: Applied): Classification {
  if (last === undefined) return { kind: 'Initial', details: [] };
  if (last.stateFingerprint !== desired.stateFingerprint) {
    return {
      kind: 'StateIncompatible',
      details: ['level, keyGroups, granularities, facets or maxEventBytes changed: existing state and checkpoints mean something else under the new settings'],
    };
  }
  const details: string[] = [];
  const scale = last.replicas !== desired.replicas;
  if (scale) details.push(`replicas ${last.replicas} → ${desired.replicas}`);
  const update = last.templateHash !== desired.templateHash;
  if (update) {
    if (last.image !== desired.image) details.push(`image ${last.image} → ${desired.image}`);
    if (last.configHash !== desired.configHash) details.push('job configuration changed');
    if (last.image === desired.image && last.configHash === desired.configHash) details.push('pod template changed');
  }
  const kind: ChangeKind = scale && update ? 'ScaleAndUpdate' : scale ? 'Scale' : update ? 'Update' : 'None';
  return { kind, details };
}
