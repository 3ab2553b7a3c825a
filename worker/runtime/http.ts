import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { listen } from '../../common/listen';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { formatBucket, parseIsoSeconds } from '../engine/time';
import { TOTAL } from '../../common/counter-id';
import type { Granularity } from '../io/types';

/**
 * The worker's one HTTP port: `/metrics` (Prometheus text), `/healthz` (liveness),
 * `/readyz` (readiness) and the query API `GET /v1/series`. It knows nothing about Kafka or
 * Cassandra: the caller passes the readiness check and the series reader, so local mode
 * (embedded sink) and cluster mode (Cassandra) serve the same API.
 *
 * GET /v1/series?scope=&statistic=&granularity=&facet=&value=&from=&to=
 *   scope, statistic, granularity (hour|day|month) are required; facet/value default to
 *   `*` (the statistic's total); from (inclusive) and to (exclusive) bound the bucket start
 *   and take ISO-8601 date-times with a zone or Unix seconds. Answers
 *   {"scope","statistic_id","granularity","facet","value","points":[{"bucket","count","uniques"?}]}
 *   with buckets as ISO-8601 UTC, ascending.
 */

/** One query of the series API (bucket bounds in seconds). */
export interface SeriesQuery {
  readonly scope: string;
  readonly statisticId: string;
  readonly granularity: Granularity;
  readonly facet: string;
  readonly value: string;
  /** Inclusive lower bound on the bucket start, seconds. */
  readonly fromSec?: number;
  /** Exclusive upper bound on the bucket start, seconds. */
  readonly toSec?: number;
}

/** One point of a counter's time series (bucket start in seconds). */
export interface SeriesPoint {
  readonly bucket: number;
  readonly count: number;
  readonly uniques?: number;
}

export type SeriesReader = (query: SeriesQuery) => Promise<SeriesPoint[]>;

export interface HttpServerOptions {
  readonly port: number;
  /** Default: all interfaces (a pod must be reachable by Prometheus and the kubelet). */
  readonly host?: string;
  readonly registry: Registry;
  /** Liveness; default always true (the process answering is the signal). */
  readonly live?: () => boolean;
  /** Readiness: the worker is started and its sink answers. */
  readonly ready: () => boolean | Promise<boolean>;
  /** The query API; absent → 404. */
  readonly series?: SeriesReader;
}

export interface RunningHttpServer {
  /** The bound port (useful with port 0). */
  readonly port: number;
  close(): Promise<void>;
}

export async function startHttpServer(opts: HttpServerOptions): Promise<RunningHttpServer> {
  const server: Server = createServer((req, res) => {
    handle(opts, req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, { error: (err as Error).message });
      else res.end();
    });
  });
  server.keepAliveTimeout = 5000;
  await listen(server, opts.port, opts.host, '--metrics-port (metrics.port in the job file)');
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(opts: HttpServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://worker');
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'only GET' });
  switch (url.pathname) {
    case '/metrics': {
      const text = await opts.registry.metrics();
      res.writeHead(200, { 'content-type': opts.registry.contentType });
      res.end(text);
      return;
    }
    case '/healthz':
      return (opts.live?.() ?? true) ? send(res, 200, { status: 'ok' }) : send(res, 503, { status: 'unhealthy' });
    case '/readyz':
      return (await opts.ready()) ? send(res, 200, { status: 'ready' }) : send(res, 503, { status: 'not ready' });
    case '/v1/series': {
      if (opts.series === undefined) return send(res, 404, { error: 'no query API on this process' });
      const parsed = parseSeriesQuery(url.searchParams);
      if (typeof parsed === 'string') return send(res, 400, { error: parsed });
      let points: SeriesPoint[];
      try {
        points = await opts.series(parsed);
      } catch (err) {
        return send(res, 503, { error: `the count store is unavailable: ${(err as Error).message}` });
      }
      return send(res, 200, {
        scope: parsed.scope,
        statistic_id: parsed.statisticId,
        granularity: parsed.granularity,
        facet: parsed.facet,
        value: parsed.value,
        points: points.map((p) => ({ bucket: formatBucket(p.bucket), count: p.count, ...(p.uniques === undefined ? {} : { uniques: p.uniques }) })),
      });
    }
    default:
      return send(res, 404, { error: `no route ${url.pathname}; try /metrics, /healthz, /readyz or /v1/series` });
  }
}

/** Parses the query string of /v1/series; a string is the 400 message. Exported for tests. */
export function parseSeriesQuery(params: URLSearchParams): SeriesQuery | string {
  const scope = params.get('scope');
  const statisticId = params.get('statistic') ?? params.get('statistic_id');
  const granularity = params.get('granularity');
  if (scope === null || scope === '') return 'scope is required';
  if (statisticId === null || statisticId === '') return 'statistic is required';
  if (granularity !== 'hour' && granularity !== 'day' && granularity !== 'month') return 'granularity must be hour, day or month';
  const facet = params.get('facet');
  const value = params.get('value');
  // `*` as the facet is the total; a facet named `*` is asked for as `**` (see common/counter-id.ts).
  const total = facet === null || facet === TOTAL;
  if (total && value !== null && value !== TOTAL) return 'facet `*` (or no facet) is the statistic\'s total, whose value is `*`; a facet named `*` is written `**`';
  if (!total && (value === null || value === '')) return 'value is required with a facet';
  const fromSec = timeParam(params.get('from'));
  const toSec = timeParam(params.get('to'));
  if (fromSec === null) return 'from must be an ISO-8601 date-time with a zone or Unix seconds';
  if (toSec === null) return 'to must be an ISO-8601 date-time with a zone or Unix seconds';
  return { scope, statisticId, granularity, facet: facet ?? TOTAL, value: value ?? TOTAL, ...(fromSec === undefined ? {} : { fromSec }), ...(toSec === undefined ? {} : { toSec }) };
}

/** undefined when absent, null when malformed. */
function timeParam(text: string | null): number | undefined | null {
  if (text === null || text === '') return undefined;
  if (/^-?\d+(\.\d+)?$/.test(text)) return Number(text);
  const s = parseIsoSeconds(text);
  return Number.isNaN(s) ? null : s;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
