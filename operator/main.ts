import { eventLoopLiveness } from '../common/metrics';
import { createServer, type Server } from 'node:http';
import { listen } from '../common/listen';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { log } from './log';
import { KubeClient, loadConfig } from '../common/kube-client';
import { Controller } from './k8s/controller';
import { LeaderElector } from './k8s/lease';
import { createOperatorMetrics, type OperatorMetrics } from './k8s/metrics';

const USAGE = `usage: abacus operator [--kubeconfig PATH] [--namespace NS] [--metrics-port N]
                       [--lease-namespace NS] [--lease-name NAME] [--identity ID] [--workers N]

Runs the AbacusJob operator. Without --kubeconfig it uses $KUBECONFIG, else the in-cluster
service account. --namespace limits it to one namespace (default: all namespaces).
Only the replica holding the Lease acts; the others wait to take over.`;

/**
 * `abacus operator`: returns the process exit code. 0 after a graceful shutdown (SIGTERM /
 * SIGINT: stop taking work, finish in-flight reconciles, release the Lease), 1 when
 * leadership is lost (the process must restart to re-sync from scratch), 2 on bad usage.
 */
export async function runOperatorCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        kubeconfig: { type: 'string' },
        namespace: { type: 'string', short: 'n' },
        'metrics-port': { type: 'string', default: '8080' },
        'lease-namespace': { type: 'string' },
        'lease-name': { type: 'string', default: 'abacus-operator' },
        identity: { type: 'string' },
        workers: { type: 'string', default: '2' },
        'resync-seconds': { type: 'string', default: '300' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const metricsPort = Number(values['metrics-port']);
  const workers = Number(values.workers);
  if (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535 || !Number.isInteger(workers) || workers < 1) {
    process.stderr.write(`--metrics-port must be 0..65535 and --workers a positive integer\n${USAGE}\n`);
    return 2;
  }

  let client: KubeClient;
  try {
    client = new KubeClient(loadConfig(values.kubeconfig));
  } catch (err) {
    process.stderr.write(`abacus operator: ${(err as Error).message}\n`);
    return 2;
  }
  const identity = values.identity ?? `${hostname()}_${process.pid}`;
  const leaseNamespace = values['lease-namespace'] ?? client.namespace ?? values.namespace ?? 'default';
  const metrics = createOperatorMetrics();
  const stop = new AbortController();
  let leading = false;
  const server = await serve(metrics, metricsPort, () => leading);

  const onSignal = (sig: string) => {
    log('info', 'shutting down', { signal: sig });
    stop.abort();
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));

  const elector = new LeaderElector(client, { namespace: leaseNamespace, name: values['lease-name'], identity });
  let exitCode = 0;
  try {
    log('info', 'starting', { identity, namespace: values.namespace ?? '(all)', lease: `${leaseNamespace}/${values['lease-name']}`, metricsPort: addressPort(server) });
    if (await elector.acquire(stop.signal)) {
      leading = true;
      metrics.leader.set(1);
      const controller = new Controller(client, metrics, {
        namespace: values.namespace,
        workers,
        identity,
        resyncMs: Number(values['resync-seconds']) * 1000,
      });
      const holding = elector.hold(stop.signal, () => {
        exitCode = 1;
        stop.abort();
      });
      await controller.run(stop.signal);
      await holding;
      leading = false;
      metrics.leader.set(0);
      if (exitCode === 0) await elector.release();
    }
  } catch (err) {
    log('error', 'operator failed', { error: (err as Error).message });
    exitCode = 1;
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
  log('info', 'stopped', { exitCode });
  return exitCode;
}

function addressPort(server: Server): number {
  const a = server.address();
  return typeof a === 'object' && a !== null ? a.port : 0;
}

/** /metrics, /healthz (the event loop runs) and /readyz (this replica is the leader or a healthy standby). */
function serve(metrics: OperatorMetrics, port: number, leading: () => boolean): Promise<Server> {
  const live = eventLoopLiveness();
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith('/metrics')) {
      metrics.registry
        .metrics()
        .then((text) => {
          res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
          res.end(text);
        })
        .catch((err: unknown) => {
          res.writeHead(500);
          res.end(String(err));
        });
    } else if (url.startsWith('/healthz') && !live()) {
      res.writeHead(503, { 'Content-Type': 'text/plain' });
      res.end('event loop stalled\n');
    } else if (url.startsWith('/healthz') || url.startsWith('/readyz')) {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end(leading() ? 'ok (leader)\n' : 'ok (standby)\n');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  server.keepAliveTimeout = 5000;
  return listen(server, port, undefined, '--metrics-port').then(() => server);
}
