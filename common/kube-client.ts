/**
 * The connection to the API server, through @kubernetes/client-node, of the operator (and of
 * a worker reporting hand-over progress): the only code, with operator/k8s/, that talks to it.
 *
 * - `loadConfig`: the library's `KubeConfig` from --kubeconfig (`loadFromFile`), $KUBECONFIG
 *   (`loadFromDefault`, which merges a list) or the pod's service account (`loadFromCluster`;
 *   the library re-reads the token as the kubelet rotates it).
 * - `KubeClient`: the library's typed API clients on that config (`core`, `customObjects`,
 *   `objects` = KubernetesObjectApi for server-side apply of any kind, `coordination()`),
 *   every request bounded by a timeout.
 * - `ApiError` / `call`: the library's ApiException (whose message dumps code, body and
 *   headers) becomes an error carrying the API server's own Status message, so a 422 from
 *   admission reads in conditions, Events and logs as the server wrote it.
 * - `request` / `watch`: raw-path calls over the library's HTTP stack, authentication and
 *   `Watch`, for callers no typed client covers (the test environment's smoke test).
 *
 * Pinned to 1.4.x: 2.x loads undici 8, which needs Node >= 22.19 (it calls zlib zstd
 * functions Node 20 lacks), so 2.x cannot even be required on this project's Node 20.
 */
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  HttpMethod,
  IsomorphicFetchHttpLibrary,
  KubeConfig,
  KubernetesObjectApi,
  ServerConfiguration,
  Watch,
  createConfiguration,
  type Middleware,
  type RequestContext,
} from '@kubernetes/client-node';

const IN_CLUSTER_HINT = 'not running in a cluster (KUBERNETES_SERVICE_HOST is unset) and no kubeconfig: pass --kubeconfig or set $KUBECONFIG';

/** A kubeconfig file, at its current context (or `context`). */
export function loadKubeconfig(path: string, context?: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  if (context !== undefined) kc.setCurrentContext(context);
  if (kc.getCurrentCluster() === null) throw new Error(`kubeconfig ${path}: context ${kc.getCurrentContext() || '(none)'} names no cluster`);
  return kc;
}

/** --kubeconfig, else $KUBECONFIG (the library merges a list), else the in-cluster service account. */
export function loadConfig(kubeconfig?: string): KubeConfig {
  if (kubeconfig !== undefined && kubeconfig !== '') return loadKubeconfig(kubeconfig);
  const kc = new KubeConfig();
  if ((process.env.KUBECONFIG ?? '') !== '') kc.loadFromDefault();
  else if (process.env.KUBERNETES_SERVICE_HOST !== undefined) kc.loadFromCluster();
  else throw new Error(IN_CLUSTER_HINT);
  if (kc.getCurrentCluster() === null) throw new Error(`kubeconfig: context ${kc.getCurrentContext() || '(none)'} names no cluster`);
  return kc;
}

/** A failed API call: the HTTP status, the Status reason and the server's message. */
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

/** An ApiError from a status code and a response body (a Status object, or its JSON text). */
function apiError(code: number, body: unknown, what: string): ApiError {
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      // not a Status object: keep the text
    }
  }
  const status = (typeof body === 'object' && body !== null ? body : {}) as { reason?: string; message?: string };
  const text = status.message ?? (typeof body === 'string' && body.trim() !== '' ? body.trim() : 'no message from the API server');
  return new ApiError(code, status.reason ?? '', `${what}: ${code} ${text}`, body);
}

/** The library's ApiException (whose message is a dump of code, body and headers) as an ApiError. */
export function toApiError(err: unknown, what: string): unknown {
  return err instanceof ApiException ? apiError((err as ApiException<unknown>).code, (err as ApiException<unknown>).body, what) : err;
}

/** Runs one library call, rethrowing its failure as an ApiError named after `what`. */
export async function call<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toApiError(err, what);
  }
}

/** Bounds every request of a client (headers and body) unless the caller set its own signal. */
function timeoutMiddleware(timeoutMs: number): Middleware {
  return {
    pre: (ctx: RequestContext) => {
      if (ctx.getSignal() === undefined) ctx.setSignal(AbortSignal.timeout(timeoutMs));
      return Promise.resolve(ctx);
    },
    post: (res) => Promise.resolve(res),
  };
}

type ApiConstructor<T> = new (config: ReturnType<typeof createConfiguration>) => T;

export interface RequestOptions {
  readonly query?: Record<string, string | number | boolean | undefined>;
  readonly body?: unknown;
  readonly contentType?: string;
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
}

export type WatchEvent = { type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR'; object: Record<string, unknown> };

/** The typed API clients the operator uses, on one KubeConfig. */
export class KubeClient {
  readonly core: CoreV1Api;
  readonly customObjects: CustomObjectsApi;
  /** Any kind by apiVersion/kind (the library's discovery finds the resource): server-side apply. */
  readonly objects: KubernetesObjectApi;

  constructor(
    readonly config: KubeConfig,
    private readonly timeoutMs = 30_000,
  ) {
    this.core = this.api(CoreV1Api);
    this.customObjects = this.api(CustomObjectsApi);
    this.objects = this.api(KubernetesObjectApi);
  }

  /** The current context's namespace, or the pod's own namespace in-cluster. */
  get namespace(): string | undefined {
    const ns = this.config.getContextObject(this.config.getCurrentContext())?.namespace;
    return ns === undefined || ns === '' ? undefined : ns.trim();
  }

  get server(): string {
    return this.config.getCurrentCluster()!.server;
  }

  /** A typed API client (e.g. CoordinationV1Api) whose requests time out after `timeoutMs`. */
  api<T>(ctor: ApiConstructor<T>, timeoutMs = this.timeoutMs): T {
    return new ctor(
      createConfiguration({
        baseServer: new ServerConfiguration<Record<string, string>>(this.server, {}),
        authMethods: { default: this.config },
        promiseMiddleware: [timeoutMiddleware(timeoutMs)],
      }),
    );
  }

  coordination(timeoutMs?: number): CoordinationV1Api {
    return this.api(CoordinationV1Api, timeoutMs);
  }

  /**
   * One request to an arbitrary API path, through the library's HTTP stack and
   * authentication; for paths no typed client covers (the test environment's smoke test).
   * Non-2xx answers become ApiError with the API server's Status message.
   */
  async request<T = Record<string, unknown>>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const ctx = new ServerConfiguration<Record<string, string>>(this.server, {}).makeRequestContext(path, method as HttpMethod);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) ctx.setQueryParam(k, String(v));
    ctx.setHeaderParam('Accept', 'application/json');
    if (opts.body !== undefined) {
      ctx.setHeaderParam('Content-Type', opts.contentType ?? 'application/json');
      ctx.setBody(typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body));
    }
    ctx.setSignal(opts.signal ?? AbortSignal.timeout(opts.timeoutMs ?? this.timeoutMs));
    await this.config.applySecurityAuthentication(ctx);
    const res = await new IsomorphicFetchHttpLibrary().send(ctx).toPromise();
    const text = await res.body.text();
    if (res.httpStatusCode >= 200 && res.httpStatusCode < 300) return (text === '' ? undefined : JSON.parse(text)) as T;
    throw apiError(res.httpStatusCode, text, `${method} ${path}`);
  }

  /**
   * A watch stream through the library's `Watch`: calls `onEvent` per event until the server
   * closes the stream or `signal` aborts (resolves) or the connection fails (rejects).
   */
  watch(path: string, query: RequestOptions['query'], onEvent: (e: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = (err: unknown) => {
        if (signal.aborted || err === null || err === undefined) resolve();
        else {
          const status = (err as { statusCode?: number }).statusCode;
          const message = err instanceof Error ? err.message : 'the watch failed';
          reject(status === undefined && err instanceof Error ? err : new ApiError(status ?? 0, '', `watch ${path}: ${status ?? ''} ${message}`));
        }
      };
      new Watch(this.config)
        .watch(path, query ?? {}, (type, object) => onEvent({ type: type as WatchEvent['type'], object: object as Record<string, unknown> }), done)
        .then((controller) => {
          if (signal.aborted) controller.abort();
          else signal.addEventListener('abort', () => controller.abort(), { once: true });
        }, reject);
    });
  }

  /** Nothing to release (the library opens connections per request); kept for callers that close. */
  close(): void {}
}
