import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { parse as parseYaml } from 'yaml';

/**
 * A small Kubernetes REST client: kubeconfig / in-cluster credentials, JSON requests and
 * watch streams over node's https.
 *
 * Why not @kubernetes/client-node at run time: 2.x loads undici 8, which needs Node >= 22.19
 * (it calls zlib zstd functions Node 20 lacks), so the package cannot even be required on
 * this project's Node 20. Its TypeScript model types are still used (type-only imports).
 */
export interface Credentials {
  readonly server: string;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly token?: () => string;
  readonly insecureSkipTlsVerify?: boolean;
  /** The context's namespace, or the pod's own namespace in-cluster. */
  readonly namespace?: string;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

type Raw = Record<string, unknown>;

function named(list: unknown, name: unknown, field: string): Raw {
  const entry = (Array.isArray(list) ? (list as Raw[]) : []).find((e) => e.name === name);
  if (entry === undefined) throw new Error(`kubeconfig: no ${field} named ${String(name)}`);
  return (entry[field] ?? {}) as Raw;
}

function dataOrFile(data: unknown, file: unknown): Buffer | undefined {
  if (typeof data === 'string') return Buffer.from(data, 'base64');
  if (typeof file === 'string') return readFileSync(file);
  return undefined;
}

/** Reads a kubeconfig file (its current context). */
export function loadKubeconfig(path: string, context?: string): Credentials {
  const doc = parseYaml(readFileSync(path, 'utf8')) as Raw;
  const ctx = named(doc.contexts, context ?? doc['current-context'], 'context');
  const cluster = named(doc.clusters, ctx.cluster, 'cluster');
  const user = named(doc.users, ctx.user, 'user');
  const tokenFile = user.tokenFile;
  const staticToken = user.token;
  return {
    server: String(cluster.server).replace(/\/+$/, ''),
    ca: dataOrFile(cluster['certificate-authority-data'], cluster['certificate-authority']),
    cert: dataOrFile(user['client-certificate-data'], user['client-certificate']),
    key: dataOrFile(user['client-key-data'], user['client-key']),
    token:
      typeof staticToken === 'string'
        ? () => staticToken
        : typeof tokenFile === 'string'
          ? () => readFileSync(tokenFile, 'utf8').trim()
          : undefined,
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    namespace: typeof ctx.namespace === 'string' ? ctx.namespace : undefined,
  };
}

/** The pod's service account; the token file is re-read because the kubelet rotates it. */
export function loadInCluster(): Credentials {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT ?? '443';
  if (host === undefined) throw new Error('not running in a cluster (KUBERNETES_SERVICE_HOST is unset): pass --kubeconfig');
  let cached = { at: 0, token: '' };
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca: readFileSync(`${SA_DIR}/ca.crt`),
    token: () => {
      if (Date.now() - cached.at > 60_000) cached = { at: Date.now(), token: readFileSync(`${SA_DIR}/token`, 'utf8').trim() };
      return cached.token;
    },
    namespace: readFileSync(`${SA_DIR}/namespace`, 'utf8').trim(),
  };
}

/** --kubeconfig, else $KUBECONFIG, else in-cluster. */
export function loadCredentials(kubeconfig?: string): Credentials {
  const path = kubeconfig ?? process.env.KUBECONFIG;
  if (path !== undefined && path !== '') return loadKubeconfig(path.split(':')[0]!);
  return loadInCluster();
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly body?: unknown,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const isNotFound = (err: unknown) => err instanceof ApiError && err.status === 404;
export const isConflict = (err: unknown) => err instanceof ApiError && err.status === 409;

export interface RequestOptions {
  readonly query?: Record<string, string | number | boolean | undefined>;
  readonly body?: unknown;
  readonly contentType?: string;
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
}

export type WatchEvent = { type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR'; object: Raw };

export class KubeClient {
  private readonly url: URL;
  private readonly agent: http.Agent;

  constructor(readonly credentials: Credentials) {
    this.url = new URL(credentials.server);
    const tls = this.url.protocol === 'https:';
    this.agent = tls
      ? new https.Agent({
          keepAlive: true,
          maxSockets: 16,
          ca: credentials.ca,
          cert: credentials.cert,
          key: credentials.key,
          rejectUnauthorized: !credentials.insecureSkipTlsVerify,
        })
      : new http.Agent({ keepAlive: true, maxSockets: 16 });
  }

  private open(method: string, path: string, opts: RequestOptions, accept = 'application/json'): http.ClientRequest {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) query.set(k, String(v));
    const qs = query.toString();
    const headers: Record<string, string> = { Accept: accept, 'User-Agent': 'abacus-operator' };
    const token = this.credentials.token?.();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (opts.body !== undefined) headers['Content-Type'] = opts.contentType ?? 'application/json';
    const mod = this.url.protocol === 'https:' ? https : http;
    return mod.request({
      protocol: this.url.protocol,
      hostname: this.url.hostname.replace(/^\[|\]$/g, ''),
      port: this.url.port || (this.url.protocol === 'https:' ? 443 : 80),
      path: `${this.url.pathname.replace(/\/$/, '')}${path}${qs ? `?${qs}` : ''}`,
      method,
      headers,
      agent: this.agent,
      signal: opts.signal,
      timeout: opts.timeoutMs,
    });
  }

  /** One JSON request; non-2xx answers become ApiError with the API server's Status message. */
  request<T = Raw>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const req = this.open(method, path, { timeoutMs: 30_000, ...opts });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on('error', reject);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = undefined;
          try {
            body = text === '' ? undefined : JSON.parse(text);
          } catch {
            body = text;
          }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve(body as T);
          else {
            const b = (typeof body === 'object' && body !== null ? body : {}) as { reason?: string; message?: string };
            reject(new ApiError(status, b.reason ?? res.statusMessage ?? '', `${method} ${path}: ${status} ${b.message ?? text}`, body));
          }
        });
      });
      if (opts.body !== undefined) req.write(typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body));
      req.end();
    });
  }

  /**
   * A watch stream: calls `onEvent` per event until the server closes the stream (resolves)
   * or the connection fails (rejects). A 410 Gone arrives as an ERROR event.
   */
  watch(path: string, query: RequestOptions['query'], onEvent: (e: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const req = this.open('GET', path, { query: { ...query, watch: 1 }, signal });
      req.on('error', (err) => (signal.aborted ? resolve() : reject(err)));
      req.on('response', (res) => {
        if ((res.statusCode ?? 0) >= 300) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => reject(new ApiError(res.statusCode ?? 0, '', `watch ${path}: ${res.statusCode} ${Buffer.concat(chunks).toString('utf8')}`)));
          return;
        }
        let buffer = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffer += chunk;
          let nl: number;
          while ((nl = buffer.indexOf('\n')) >= 0) {
            const line = buffer.slice(0, nl).trim();
            buffer = buffer.slice(nl + 1);
            if (line !== '') onEvent(JSON.parse(line) as WatchEvent);
          }
        });
        res.on('end', () => resolve());
        res.on('error', (err) => (signal.aborted ? resolve() : reject(err)));
        res.on('aborted', () => resolve());
      });
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
