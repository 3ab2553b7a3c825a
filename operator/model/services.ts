import type { V1PodDisruptionBudget, V1Service } from '@kubernetes/client-node';
import type { AbacusJob } from '../api/abacusjob';
import { childMeta, names, selectorLabels } from './names';

/** Governing Service of the StatefulSet: stable DNS names `<pod>.<job>-workers`. */
export function desiredHeadlessService(job: AbacusJob): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: childMeta(job, names.headlessService(job.metadata.name), 'worker'),
    spec: {
      clusterIP: 'None',
      // Peers must resolve each other while restoring, before they are ready.
      publishNotReadyAddresses: true,
      selector: selectorLabels(job.metadata.name),
      ports: [{ name: 'http', port: job.spec.metrics.port, targetPort: 'http', protocol: 'TCP' }],
    },
  };
}

/** Metrics endpoint of the workers, selected by the chart's ServiceMonitor via its component label. */
export function desiredMetricsService(job: AbacusJob): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: childMeta(job, names.metricsService(job.metadata.name), 'metrics'),
    spec: {
      type: 'ClusterIP',
      selector: selectorLabels(job.metadata.name),
      ports: [{ name: 'metrics', port: job.spec.metrics.port, targetPort: 'http', protocol: 'TCP' }],
    },
  };
}

/** At most one worker voluntarily down at a time: each holds key groups nobody else serves. */
export function desiredPodDisruptionBudget(job: AbacusJob): V1PodDisruptionBudget {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: childMeta(job, names.pdb(job.metadata.name), 'worker'),
    spec: {
      maxUnavailable: 1,
      selector: { matchLabels: selectorLabels(job.metadata.name) },
      unhealthyPodEvictionPolicy: 'AlwaysAllow',
    },
  };
}
