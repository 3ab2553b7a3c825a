import { PatchStrategy, setHeaderOptions, type CoreV1Event } from '@kubernetes/client-node';
import { log } from '../log';
import { call, type KubeClient } from '../../common/kube-client';

const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export interface Involved {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; uid: string; resourceVersion?: string };
}

/**
 * Kubernetes Events (core/v1) for what the operator does and why. Repeats of the same
 * (object, type, reason, message) within ten minutes bump the count of one Event instead of
 * creating new ones, as kubectl describe expects. Failing to record is logged, never fatal.
 * Written through the library's CoreV1Api.
 */
export class EventRecorder {
  private readonly recent = new Map<string, { name: string; count: number; at: number }>();

  constructor(
    private readonly client: KubeClient,
    private readonly instance: string,
  ) {}

  async record(obj: Involved, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const ns = obj.metadata.namespace;
    const key = `${obj.metadata.uid}|${type}|${reason}|${message}`;
    const now = new Date();
    const stamp = now.toISOString().replace(/\.\d{3}Z$/, 'Z');
    const seen = this.recent.get(key);
    log(type === 'Warning' ? 'warn' : 'info', `event ${reason}`, { object: `${ns}/${obj.metadata.name}`, message });
    try {
      if (seen !== undefined && now.getTime() - seen.at < 600_000) {
        seen.count++;
        seen.at = now.getTime();
        await call(`update event ${ns}/${seen.name}`, () =>
          this.client.core.patchNamespacedEvent({ name: seen.name, namespace: ns, body: { count: seen.count, lastTimestamp: stamp } }, MERGE_PATCH),
        );
        return;
      }
      const event: CoreV1Event = {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { generateName: `${obj.metadata.name}.`, namespace: ns },
        involvedObject: {
          apiVersion: obj.apiVersion,
          kind: obj.kind,
          name: obj.metadata.name,
          namespace: ns,
          uid: obj.metadata.uid,
          resourceVersion: obj.metadata.resourceVersion,
        },
        type,
        reason,
        message: message.slice(0, 1024),
        source: { component: 'abacus-operator' },
        reportingComponent: 'abacus.dev/operator',
        reportingInstance: this.instance,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      };
      const created = await call(`create event in ${ns}`, () => this.client.core.createNamespacedEvent({ namespace: ns, body: event }));
      this.recent.set(key, { name: created.metadata.name ?? '', count: 1, at: now.getTime() });
      if (this.recent.size > 5000) this.recent.delete(this.recent.keys().next().value!);
    } catch (err) {
      this.recent.delete(key);
      log('warn', 'could not record event', { reason, error: (err as Error).message });
    }
  }
}
