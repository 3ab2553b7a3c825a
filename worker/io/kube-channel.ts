import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { call, isNotFound, KubeClient, loadConfig } from '../../common/kube-client';

const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/**
 * The worker's only conversation with the API server: read and watch one ConfigMap (the
 * assignment document) and merge-patch one key of another (its hand-over report). The
 * per-job Role the operator creates allows exactly that (get/list/watch by name on
 * `<job>-assignment`, get/patch on `<job>-worker-<ordinal>`), nothing else.
 */
export class KubeConfigMaps {
  private readonly client: KubeClient;

  constructor(
    readonly namespace: string,
    kubeconfig?: string,
  ) {
    this.client = new KubeClient(loadConfig(kubeconfig), 10_000);
  }

  /** The ConfigMap's data; undefined when it does not exist (yet). */
  async read(name: string): Promise<Record<string, string> | undefined> {
    try {
      const cm = await call(`get configmap ${this.namespace}/${name}`, () => this.client.core.readNamespacedConfigMap({ name, namespace: this.namespace }));
      return cm.data ?? {};
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * Calls `onChange` with the data of ConfigMap `name` on every change (and once when the watch opens),
   * until the server ends the stream (resolves; the caller watches again), `signal` aborts
   * (resolves) or the connection fails (rejects). A field selector on the name keeps the
   * stream to that one object, which is what RBAC by resource name allows.
   */
  watch(name: string, onChange: (data: Record<string, string>) => void, signal: AbortSignal): Promise<void> {
    return this.client.watch(
      `/api/v1/namespaces/${this.namespace}/configmaps`,
      { fieldSelector: `metadata.name=${name}` },
      (e) => {
        if (e.type === 'ADDED' || e.type === 'MODIFIED') onChange((e.object as { data?: Record<string, string> }).data ?? {});
      },
      signal,
    );
  }

  /** Sets one key of an existing ConfigMap's data (a JSON merge patch: other keys and metadata stay). */
  async write(name: string, key: string, value: string): Promise<void> {
    await call(`patch configmap ${this.namespace}/${name}`, () =>
      this.client.core.patchNamespacedConfigMap({ name, namespace: this.namespace, body: { data: { [key]: value } } }, MERGE_PATCH),
    );
  }
}
