import { sleep } from '../../common/sleep';
import { V1MicroTime, type CoordinationV1Api, type V1Lease } from '@kubernetes/client-node';
import { log } from '../log';
import { call, isConflict, isNotFound, type KubeClient } from '../../common/kube-client';

export interface LeaseOptions {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  readonly leaseDurationMs?: number;
  readonly renewDeadlineMs?: number;
  readonly retryPeriodMs?: number;
}

/**
 * Leader election on a coordination.k8s.io Lease, read and written with the library's
 * CoordinationV1Api (@kubernetes/client-node 1.4 ships no leader-election helper), with
 * client-go's rules: a lease held by someone else counts as expired only after its duration
 * has passed *on our clock* since we last saw it change (so clock skew between replicas
 * cannot make two leaders), every write is a compare-and-swap on resourceVersion, and a
 * leader that cannot renew within the renew deadline stops acting before its lease can
 * expire for the others.
 */
export class LeaderElector {
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private observed: { rv?: string; holder?: string; at: number } = { at: 0 };
  private current?: V1Lease;
  private readonly leases: CoordinationV1Api;

  constructor(
    client: KubeClient,
    private readonly options: LeaseOptions,
  ) {
    this.leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = options.retryPeriodMs ?? 2_000;
    // A request must not outlive a retry period or two: renewals would miss the deadline unseen.
    this.leases = client.coordination(this.retryPeriodMs * 2);
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
    if (lease?.spec?.holderIdentity !== this.options.identity) return;
    const { namespace, name } = this.options;
    try {
      await call(`release lease ${namespace}/${name}`, () =>
        this.leases.replaceNamespacedLease({
          name,
          namespace,
          body: { ...lease, spec: { ...lease.spec, holderIdentity: undefined, leaseDurationSeconds: 1, renewTime: new V1MicroTime() } },
        }),
      );
      log('info', 'released leadership', { identity: this.options.identity });
    } catch (err) {
      log('warn', 'could not release the lease', { error: (err as Error).message });
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.options;
    const now = new V1MicroTime();
    const spec = { holderIdentity: identity, leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000), renewTime: now };
    let lease: V1Lease | undefined;
    try {
      lease = await call(`read lease ${namespace}/${name}`, () => this.leases.readNamespacedLease({ name, namespace }));
    } catch (err) {
      if (!isNotFound(err)) {
        log('warn', 'cannot read the lease', { error: (err as Error).message });
        return false;
      }
    }
    try {
      if (lease === undefined) {
        this.current = await call(`create lease ${namespace}/${name}`, () =>
          this.leases.createNamespacedLease({
            namespace,
            body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace }, spec: { ...spec, acquireTime: now, leaseTransitions: 0 } },
          }),
        );
        this.observe(this.current);
        return true;
      }
      this.observe(lease);
      const holder = lease.spec?.holderIdentity ?? '';
      const held = holder !== '' && holder !== identity;
      const durationMs = (lease.spec?.leaseDurationSeconds ?? 15) * 1000;
      if (held && Date.now() - this.observed.at < durationMs) return false;
      const transitions = (lease.spec?.leaseTransitions ?? 0) + (holder === identity ? 0 : 1);
      this.current = await call(`renew lease ${namespace}/${name}`, () =>
        this.leases.replaceNamespacedLease({
          name,
          namespace,
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: lease.metadata,
            spec: { ...spec, acquireTime: holder === identity ? lease.spec?.acquireTime : now, leaseTransitions: transitions },
          },
        }),
      );
      this.observe(this.current);
      return true;
    } catch (err) {
      if (!isConflict(err)) log('warn', 'cannot write the lease', { error: (err as Error).message });
      return false;
    }
  }

  private observe(lease: V1Lease): void {
    if (lease.metadata?.resourceVersion !== this.observed.rv) {
      this.observed = { rv: lease.metadata?.resourceVersion, holder: lease.spec?.holderIdentity ?? '', at: Date.now() };
    }
  }
}

