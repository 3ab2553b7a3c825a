import { log } from '../log';
import type { KubeClient } from './client';
import { RESOURCES, collectionPath, objectPath } from './resources';

export interface Involved {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; uid: string; resourceVersion?: string };
}

/**
 * Kubernetes Events (core/v1) for what the operator does and why. Repeats of the same
 * (object, type, reason, message) within ten minutes bump the count of one Event instead of
 * creating new ones, as kubectl describe expects. Failing to record is logged, never fatal.
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
        await this.client.request('PATCH', objectPath(RESOURCES.event, ns, seen.name), {
          body: { count: seen.count, lastTimestamp: stamp },
          contentType: 'application/merge-patch+json',
        });
        return;
      }
      const created = await this.client.request<{ metadata: { name: string } }>('POST', collectionPath(RESOURCES.event, ns), {
        body: {
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
          firstTimestamp: stamp,
          lastTimestamp: stamp,
          count: 1,
        },
      });
      this.recent.set(key, { name: created.metadata.name, count: 1, at: now.getTime() });
      if (this.recent.size > 5000) this.recent.delete(this.recent.keys().next().value!);
    } catch (err) {
      this.recent.delete(key);
      log('warn', 'could not record event', { reason, error: (err as Error).message });
    }
  }
}
