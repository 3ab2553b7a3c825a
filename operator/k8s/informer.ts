import { log } from '../log';
import { ApiError, type KubeClient, type WatchEvent } from './client';
import { collectionPath, type Resource } from './resources';

export interface Meta {
  name: string;
  namespace?: string;
  resourceVersion?: string;
  generation?: number;
  uid?: string;
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
  deletionTimestamp?: string;
}
export interface Obj {
  metadata: Meta;
  [k: string]: unknown;
}

export type Handler = (type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: Obj) => void;

export interface InformerOptions {
  readonly namespace?: string;
  readonly labelSelector?: string;
}

/**
 * List + watch of one resource into a local cache, calling `handler` on every change.
 * Relists after 410 Gone (the watch fell too far behind) and reconnects with backoff after
 * errors, so the cache converges on the API server's state whatever happens to the stream.
 */
export class Informer {
  private readonly cache = new Map<string, Obj>();
  private resourceVersion = '';
  private syncedResolve!: () => void;
  readonly synced: Promise<void> = new Promise((r) => (this.syncedResolve = r));

  constructor(
    private readonly client: KubeClient,
    readonly resource: Resource,
    private readonly options: InformerOptions,
    private readonly handler: Handler,
    private readonly onEvent?: () => void,
  ) {}

  get(namespace: string, name: string): Obj | undefined {
    return this.cache.get(`${namespace}/${name}`);
  }

  list(): Obj[] {
    return [...this.cache.values()];
  }

  /** Runs until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    let failures = 0;
    let needList = true;
    while (!signal.aborted) {
      try {
        if (needList) {
          await this.relist(signal);
          needList = false;
          this.syncedResolve();
        }
        let gone = false;
        await this.client.watch(
          collectionPath(this.resource, this.options.namespace),
          {
            resourceVersion: this.resourceVersion,
            allowWatchBookmarks: true,
            labelSelector: this.options.labelSelector,
            timeoutSeconds: 240 + Math.floor(Math.random() * 120),
          },
          (e) => {
            if (this.apply(e)) gone = true;
          },
          signal,
        );
        if (gone) needList = true;
        failures = 0;
      } catch (err) {
        if (signal.aborted) break;
        if (err instanceof ApiError && err.status === 410) needList = true;
        failures++;
        const delay = Math.min(30_000, 250 * 2 ** Math.min(failures, 7));
        log('warn', 'watch failed; retrying', { resource: this.resource.plural, error: (err as Error).message, retryInMs: delay });
        await sleep(delay, signal);
      }
    }
  }

  /** Applies one watch event to the cache; true when the watch must be restarted from a list. */
  private apply(e: WatchEvent): boolean {
    if (e.type === 'ERROR') {
      const code = (e.object as { code?: number }).code;
      if (code === 410) return true;
      log('warn', 'watch error event', { resource: this.resource.plural, status: e.object });
      return true;
    }
    const obj = e.object as unknown as Obj;
    if (obj.metadata?.resourceVersion !== undefined) this.resourceVersion = obj.metadata.resourceVersion;
    if (e.type === 'BOOKMARK') return false;
    this.onEvent?.();
    const key = `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    if (e.type === 'DELETED') this.cache.delete(key);
    else this.cache.set(key, obj);
    this.handler(e.type, obj);
    return false;
  }

  private async relist(signal: AbortSignal): Promise<void> {
    const list = await this.client.request<{ metadata: { resourceVersion: string }; items: Obj[] }>('GET', collectionPath(this.resource, this.options.namespace), {
      query: { labelSelector: this.options.labelSelector },
      signal,
    });
    const seen = new Set<string>();
    for (const item of list.items) {
      const key = `${item.metadata.namespace ?? ''}/${item.metadata.name}`;
      seen.add(key);
      const before = this.cache.get(key);
      this.cache.set(key, item);
      if (before?.metadata.resourceVersion !== item.metadata.resourceVersion) this.handler(before === undefined ? 'ADDED' : 'MODIFIED', item);
    }
    for (const [key, obj] of [...this.cache]) {
      if (!seen.has(key)) {
        this.cache.delete(key);
        this.handler('DELETED', obj);
      }
    }
    this.resourceVersion = list.metadata.resourceVersion;
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
