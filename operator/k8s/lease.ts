import { log } from '../log';
import { isConflict, isNotFound, type KubeClient } from './client';
import { sleep } from './informer';
import { RESOURCES, collectionPath, objectPath } from './resources';

export interface LeaseOptions {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  readonly leaseDurationMs?: number;
  readonly renewDeadlineMs?: number;
  readonly retryPeriodMs?: number;
}

interface LeaseObject {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: {
    holderIdentity?: string | null;
    leaseDurationSeconds?: number;
    acquireTime?: string | null;
    renewTime?: string | null;
    leaseTransitions?: number;
  };
}

/** MicroTime as the API server wants it. */
const microTime = (d: Date) => d.toISOString().replace(/Z$/, '000Z');

/**
 * Leader election on a coordination.k8s.io Lease, with client-go's rules: a lease held by
 * someone else counts as expired only after its duration has passed *on our clock* since we
 * last saw it change (so clock skew between replicas cannot make two leaders), every write
 * is a compare-and-swap on resourceVersion, and a leader that cannot renew within the renew
 * deadline stops acting before its lease can expire for the others.
 */
export class LeaderElector {
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private observed: { rv?: string; holder?: string; at: number } = { at: 0 };
  private current?: LeaseObject;

  constructor(
    private readonly client: KubeClient,
    private readonly options: LeaseOptions,
  ) {
    this.leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = options.retryPeriodMs ?? 2_000;
  }

  get identity(): string {
    return this.options.identity;
  }

  /** Resolves true once leader, false if aborted first. */
  async acquire(signal: AbortSignal): Promise<boolean> {
    let announced = false;
    while (!signal.aborted) {
      if (await this.tryAcquireOrRenew()) {
        log('info', 'became leader', { lease: `${this.options.namespace}/${this.options.name}`, identity: this.options.identity });
        return true;
      }
      if (!announced) {
        log('info', 'waiting for leadership', { lease: `${this.options.namespace}/${this.options.name}`, holder: this.observed.holder });
        announced = true;
      }
      await sleep(this.retryPeriodMs * (1 + Math.random() * 0.2), signal);
    }
    return false;
  }

  /** Renews until aborted (resolves) or until a renewal misses the deadline (calls onLost). */
  async hold(signal: AbortSignal, onLost: () => void): Promise<void> {
    let lastRenew = Date.now();
    while (!signal.aborted) {
      await sleep(this.retryPeriodMs, signal);
      if (signal.aborted) return;
      if (await this.tryAcquireOrRenew()) {
        lastRenew = Date.now();
      } else if (this.observed.holder !== this.options.identity || Date.now() - lastRenew > this.renewDeadlineMs) {
        log('error', 'lost leadership', { holder: this.observed.holder, sinceRenewMs: Date.now() - lastRenew });
        onLost();
        return;
      }
    }
  }

  /** Gives the lease up so a standby takes over at once instead of after the lease duration. */
  async release(): Promise<void> {
    const lease = this.current;
    if (lease === undefined || lease.spec.holderIdentity !== this.options.identity) return;
    try {
      await this.client.request('PUT', objectPath(RESOURCES.lease, this.options.namespace, this.options.name), {
        body: { ...lease, apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', spec: { ...lease.spec, holderIdentity: null, leaseDurationSeconds: 1, renewTime: microTime(new Date()) } },
      });
      log('info', 'released leadership', { identity: this.options.identity });
    } catch (err) {
      log('warn', 'could not release the lease', { error: (err as Error).message });
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.options;
    const now = new Date();
    const spec = { holderIdentity: identity, leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000), renewTime: microTime(now) };
    let lease: LeaseObject | undefined;
    try {
      lease = await this.client.request<LeaseObject>('GET', objectPath(RESOURCES.lease, namespace, name), { timeoutMs: this.retryPeriodMs * 2 });
    } catch (err) {
      if (!isNotFound(err)) {
        log('warn', 'cannot read the lease', { error: (err as Error).message });
        return false;
      }
    }
    try {
      if (lease === undefined) {
        this.current = await this.client.request<LeaseObject>('POST', collectionPath(RESOURCES.lease, namespace), {
          body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace }, spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 } },
        });
        this.observe(this.current);
        return true;
      }
      this.observe(lease);
      const holder = lease.spec.holderIdentity ?? '';
      const held = holder !== '' && holder !== identity;
      const durationMs = (lease.spec.leaseDurationSeconds ?? 15) * 1000;
      if (held && Date.now() - this.observed.at < durationMs) return false;
      const transitions = (lease.spec.leaseTransitions ?? 0) + (holder === identity ? 0 : 1);
      this.current = await this.client.request<LeaseObject>('PUT', objectPath(RESOURCES.lease, namespace, name), {
        body: {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: lease.metadata,
          spec: { ...spec, acquireTime: holder === identity ? lease.spec.acquireTime : microTime(now), leaseTransitions: transitions },
        },
        timeoutMs: this.retryPeriodMs * 2,
      });
      this.observe(this.current);
      return true;
    } catch (err) {
      if (!isConflict(err)) log('warn', 'cannot write the lease', { error: (err as Error).message });
      return false;
    }
  }

  private observe(lease: LeaseObject): void {
    if (lease.metadata.resourceVersion !== this.observed.rv) {
      this.observed = { rv: lease.metadata.resourceVersion, holder: lease.spec.holderIdentity ?? '', at: Date.now() };
    }
  }
}
