/**
 * Checkpoints and restore — the public API (docs/adr/0004-checkpoints.md).
 *
 * On a running task (worker/runtime/task.ts):
 *   task.checkpoint(groups?, reason)          → { manifestId, bytes, durationMs, base, delta, unchanged }
 *   task.restoreGroups(objectStore, groups, { manifestId? })  restore while other groups count
 * Standalone (before a task opens the store, or in tools):
 *   restoreGroups(store, objectStore, groups, { manifestId?, fingerprint? })
 *   groupsWithLocalState(store, groups)       which groups need a restore
 *   readCatalog(objectStore)                  every manifest, newest first
 * Object stores: LocalObjectStore (a directory), S3ObjectStore; objectStoreFor(config).
 */
export { Checkpointer, type CheckpointResult, type CheckpointerSettings } from './checkpointer';
export { type ChunkRef, type GroupEntry, type Manifest } from './format';
export { LocalObjectStore, type ObjectInfo, type ObjectStore } from './object-store';
export { groupsWithLocalState, readPresence, type Presence } from './presence';
export { planRetention, type RetentionInput, type RetentionPlan } from './retention';
export { newestFirst, readCatalog, readManifestById, restoreGroups, verifyManifest, type RestoredGroup, type RestoreOptions, type RestoreResult } from './restore';
export { objectStoreFor, s3ClientFor, S3ObjectStore, type S3Location } from './s3-object-store';
