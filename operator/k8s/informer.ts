import {
  ADD,
  DELETE,
  ERROR,
  UPDATE,
  makeInformer,
  type Informer as LibraryInformer,
  type KubernetesObject,
  type ObjectCache,
  type V1ObjectMeta,
} from '@kubernetes/client-node';
import { log } from '../log';
import { call, type KubeClient } from '../../common/kube-client';
import { apiVersionOf, collectionPath, type Resource } from './resources';

export type Obj = KubernetesObject & { metadata: V1ObjectMeta; [k: string]: unknown };

export type Handler = (type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: Obj) => void;

export interface InformerOptions {
  readonly namespace?: string;
  readonly labelSelector?: string;
}

/**
 * One resource's cache, kept by the library's informer (`makeInformer`: list, then watch
 * from the list's resourceVersion, relisting after 410 Gone), calling `handler` on every
 * change. The library's informer stops at the first error; `run` restarts it with
 * exponential backoff, so the cache converges on the API server's state whatever happens
 * to the stream.
 */
export class Informer {
  private readonly informer: LibraryInformer<Obj> & ObjectCache<Obj>;
  private markSynced!: () => void;
  /** Resolves once the first list has filled the cache and the watch is open. */
  readonly synced: Promise<void> = new Promise((r) => (this.markSynced = r));

  constructor(
    client: KubeClient,
    readonly resource: Resource,
    options: InformerOptions,
    handler: Handler,
    onEvent?: () => void,
  ) {
    const { namespace, labelSelector } = options;
    const list = () =>
      call(`list ${resource.plural}`, () =>
        client.objects.list<Obj>(apiVersionOf(resource), resource.kind, namespace, undefined, undefined, undefined, undefined, labelSelector),
      );
    this.informer = makeInformer<Obj>(client.config, collectionPath(resource, namespace), list, labelSelector);
    const forward = (type: Parameters<Handler>[0]) => (obj: Obj) => {
      onEvent?.();
      handler(type, obj);
    };
    this.informer.on(ADD, forward('ADDED'));
    this.informer.on(UPDATE, forward('MODIFIED'));
    this.informer.on(DELETE, forward('DELETED'));
  }

  get(namespace: string, name: string): Obj | undefined {
    return this.informer.get(name, namespace);
  }

  list(): Obj[] {
    return [...this.informer.list()];
  }

  /** Runs until `signal` aborts. */
  run(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      let failures = 0;
      let failedSinceStart = false;
      let retry: NodeJS.Timeout | undefined;
      const stop = () => this.informer.stop().then(resolve, resolve);
      const start = () => {
        if (signal.aborted) return;
        failedSinceStart = false;
        this.informer.start().then(() => {
          // The library does not look at stop() while it lists: stop again if aborted meanwhile.
          if (signal.aborted) void stop();
          else if (!failedSinceStart) {
            failures = 0;
            this.markSynced();
          }
        }, onError);
      };
      const onError = (err: unknown) => {
        if (signal.aborted) return; // stopping aborts the stream, which the library reports as an error
        failedSinceStart = true;
        failures++;
        const delay = Math.min(30_000, 250 * 2 ** Math.min(failures, 7));
        log('warn', 'watch failed; retrying', { resource: this.resource.plural, error: describe(err), retryInMs: delay });
        clearTimeout(retry);
        retry = setTimeout(start, delay);
      };
      this.informer.on(ERROR, onError);
      if (signal.aborted) return resolve();
      signal.addEventListener(
        'abort',
        () => {
          clearTimeout(retry);
          void stop();
        },
        { once: true },
      );
      start();
    });
  }
}

/** The library's watch reports a refused watch as an Error whose message is the HTTP status text. */
function describe(err: unknown): string {
  const status = (err as { statusCode?: number } | undefined)?.statusCode;
  const message = err instanceof Error ? err.message : String(err);
  return status === undefined ? message : `watch: ${status} ${message}`;
}
