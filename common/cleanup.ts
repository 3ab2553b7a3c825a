/**
 * The deletion cleanup's report (spec.whenDeleted: Delete): the contract between the cleanup
 * pod (`abacus cleanup`, worker/runtime/cleanup.ts), which writes it, and the operator
 * (operator/reconcile/finalize.ts), which turns it into the Deleting condition and Events.
 * It lives in the ConfigMap `<job>-cleanup`, key cleanup.json: the operator creates the
 * ConfigMap, the job's worker identity may patch it, and it goes with the job.
 */
export interface CleanupReport {
  /** running: an attempt is under way; blocked: the last attempt failed and is retried; done: nothing is left. */
  readonly state: 'running' | 'blocked' | 'done';
  /** What was deleted, or what blocks it and what to do. */
  readonly message: string;
  /** Attempts made so far (1 for the first). */
  readonly attempts: number;
  /** When the report was written (ms since the epoch). */
  readonly atMs: number;
}

export const CLEANUP_KEY = 'cleanup.json';

/** The cleanup's Kubernetes Job and its report ConfigMap share this name. */
export const cleanupName = (job: string): string => `${job}-cleanup`;

export function parseCleanupReport(json: string | undefined): CleanupReport | undefined {
  if (json === undefined) return undefined;
  try {
    const r = JSON.parse(json) as Partial<CleanupReport>;
    if ((r.state !== 'running' && r.state !== 'blocked' && r.state !== 'done') || typeof r.message !== 'string') return undefined;
    return { state: r.state, message: r.message, attempts: Number.isInteger(r.attempts) ? r.attempts! : 0, atMs: typeof r.atMs === 'number' ? r.atMs : 0 };
  } catch {
    return undefined; // a half-written or foreign value: treated as no report yet
  }
}
