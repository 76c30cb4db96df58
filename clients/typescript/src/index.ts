/**
 * A client for the local HTTP API of a Basic node (`basic up`), for
 * browsers and Node. No dependencies beyond the platform's `fetch`.
 *
 * ```ts
 * import { Basic } from "@basic/client";
 * const basic = new Basic({ store: localStorageStore("todo-token") });
 * if (!(await basic.hasToken())) {
 *   await basic.requestAccess({ name: "Todo", scopes: { todo: "read_write" } }, {
 *     onPending: (p) => show(`Approve with: basic app approve ${p.id}`),
 *   });
 * }
 * type Item = { id: string; title: string; done: boolean };
 * const items = await basic.query<Item>("SELECT * FROM todo.items");
 * const live = basic.live<Item>("SELECT * FROM todo.items", [], (rows) => render(rows));
 * ```
 *
 * From a web page the node binds the app's token to the page's origin: the
 * token works from that page only. Every failure is a {@link BasicError}
 * with the API's status and code.
 *
 * @module
 */

/** Rights on a scope (a schema namespace). */
export type Access = "read" | "read_write";

/** A cell value, or a statement parameter. */
export type Value = null | boolean | number | string | Value[] | { [key: string]: Value };

/** What an app asks for. */
export interface AccessRequest {
  /** The name the user sees (1 to 64 characters). */
  name: string;
  /** Namespace → rights. */
  scopes: Record<string, Access>;
}

/** A request waiting for the user: show it, so they know what to approve. */
export interface PendingAccess {
  /** The request id: the user approves with `basic app approve ID`. */
  id: string;
  /** The one-time secret the app polls with. */
  secret: string;
  /** The app's id (`app_…`). */
  app: string;
}

/** The rows of a query. */
export interface Rows {
  /** Column names. */
  columns: string[];
  /** Rows of values, in column order. */
  rows: Value[][];
}

/** What a write did. */
export interface Written {
  /** Rows inserted, updated or deleted. */
  written: number;
  /** The commits made. */
  commits: string[];
}

/** The answer to a statement. */
export type SqlResult = Rows | Written;

/** The codes of {@link BasicError}: the API's, and `network` (no answer). */
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "origin_refused"
  | "not_found"
  | "method_not_allowed"
  | "conflict"
  | "device_removed"
  | "too_large"
  | "wrong_host"
  | "query_timeout"
  | "too_many_requests"
  | "busy"
  | "internal"
  | "denied"
  | "network";

/** A failure, with the API's status (0: no answer) and code. */
export class BasicError extends Error {
  /** The HTTP status; 0 when the node could not be reached. */
  readonly status: number;
  /** The API's code (`forbidden`, `query_timeout`…). */
  readonly code: ErrorCode;
  /** For 429: seconds to wait before asking again. */
  readonly retryAfter: number | undefined;

  constructor(status: number, code: ErrorCode, message: string, retryAfter?: number) {
    super(message);
    this.name = "BasicError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /**
   * The token does not work (any more): unknown to the node (401), or
   * refused for what was asked (403 `forbidden`: outside its grants, which
   * after a revocation is everything).
   */
  get revoked(): boolean {
    return this.status === 401 || (this.status === 403 && this.code === "forbidden");
  }
}

/** Where the app keeps its token: the app decides. */
export interface TokenStore {
  /** The token, if any. */
  get(): string | null | Promise<string | null>;
  /** Keeps `token`. */
  set(token: string): void | Promise<void>;
  /** Forgets the token. */
  clear(): void | Promise<void>;
}

/** A token kept in memory only. */
export function memoryStore(token: string | null = null): TokenStore {
  return {
    get: () => token,
    set: (value) => {
      token = value;
    },
    clear: () => {
      token = null;
    },
  };
}

/** A token kept in the browser's `localStorage` under `key`. */
export function localStorageStore(key: string): TokenStore {
  return {
    get: () => globalThis.localStorage.getItem(key),
    set: (value) => globalThis.localStorage.setItem(key, value),
    clear: () => globalThis.localStorage.removeItem(key),
  };
}

/** Options of {@link Basic}. */
export interface Options {
  /** The node's API (default `http://127.0.0.1:7878`). */
  url?: string;
  /** Where the token is kept (default: in memory). */
  store?: TokenStore;
  /** The `fetch` to use (default: the platform's). */
  fetch?: typeof globalThis.fetch;
}

/** Options of {@link Basic.requestAccess}. */
export interface RequestOptions {
  /** Called once the request is made: show the user what to approve. */
  onPending?: (pending: PendingAccess) => void;
  /** How often to ask whether it was answered (default 1000 ms). */
  pollMs?: number;
  /** Stops waiting. */
  signal?: AbortSignal;
}

/** A live query: close it when done. */
export interface Live {
  /** Stops the query. */
  close(): void;
  /** Settles when the query ends: resolves when closed, rejects on an error. */
  readonly done: Promise<void>;
}

/** A client of one node. */
export class Basic {
  readonly url: string;
  readonly #store: TokenStore;
  readonly #fetch: typeof globalThis.fetch;

  constructor(options: Options = {}) {
    this.url = (options.url ?? "http://127.0.0.1:7878").replace(/\/+$/, "");
    this.#store = options.store ?? memoryStore();
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** Whether a token is kept. */
  async hasToken(): Promise<boolean> {
    return (await this.#store.get()) !== null;
  }

  /** Forgets the token (after a revocation, say). */
  async forget(): Promise<void> {
    await this.#store.clear();
  }

  /**
   * Asks the user for access and waits for the answer: `onPending` gets
   * the request to show, then the token is kept in the store once the user
   * approves. Rejects with code `denied` if the user denies it.
   */
  async requestAccess(request: AccessRequest, options: RequestOptions = {}): Promise<void> {
    const pending = (await this.#call("POST", "/v0/apps/requests", request, false)) as PendingAccess;
    options.onPending?.(pending);
    await this.waitForAccess(pending, options);
  }

  /** Waits for the answer to a request made before (by {@link requestAccess}). */
  async waitForAccess(pending: PendingAccess, options: RequestOptions = {}): Promise<void> {
    const path = `/v0/apps/requests/${encodeURIComponent(pending.id)}?secret=${encodeURIComponent(pending.secret)}`;
    for (;;) {
      const state = (await this.#call("GET", path, undefined, false)) as
        | { status: "pending" }
        | { status: "denied" }
        | { status: "approved"; token: string };
      if (state.status === "approved") {
        await this.#store.set(state.token);
        return;
      }
      if (state.status === "denied") {
        throw new BasicError(403, "denied", "the user denied the request");
      }
      await sleep(options.pollMs ?? 1000, options.signal);
    }
  }

  /** Runs one statement. */
  async sql(sql: string, params: Value[] = []): Promise<SqlResult> {
    return (await this.#call("POST", "/v0/sql", { sql, params }, true)) as SqlResult;
  }

  /** Runs a query; each row as an object keyed by column name. */
  async query<T = Record<string, Value>>(sql: string, params: Value[] = []): Promise<T[]> {
    const result = await this.sql(sql, params);
    if (!("columns" in result)) {
      throw new BasicError(400, "bad_request", "the statement is not a query");
    }
    return objects<T>(result);
  }

  /** Runs a write. */
  async execute(sql: string, params: Value[] = []): Promise<Written> {
    const result = await this.sql(sql, params);
    if (!("written" in result)) {
      throw new BasicError(400, "bad_request", "the statement is not a write");
    }
    return result;
  }

  /**
   * A live query: `onRows` gets the rows now, then each time they change.
   * Streams `GET /v0/live` with the token in a header (never in the URL).
   */
  live<T = Record<string, Value>>(
    sql: string,
    params: Value[],
    onRows: (rows: T[]) => void,
  ): Live {
    const controller = new AbortController();
    const query = `?sql=${encodeURIComponent(sql)}&params=${encodeURIComponent(JSON.stringify(params))}`;
    const done = (async () => {
      const response = await this.#send("GET", `/v0/live${query}`, undefined, true, controller.signal);
      const body = response.body;
      if (body === null) {
        throw new BasicError(response.status, "internal", "the live query has no body");
      }
      for await (const event of serverEvents(body)) {
        if (event.name === "rows") {
          onRows(objects<T>(JSON.parse(event.data) as Rows));
        } else if (event.name === "error") {
          // The stream's own status was 200: the code says what happened.
          const error = errorOf(403, JSON.parse(event.data));
          throw error.code === "query_timeout" ? errorOf(422, JSON.parse(event.data)) : error;
        }
      }
    })().catch((error: unknown) => {
      if (controller.signal.aborted) return;
      throw error;
    });
    return { close: () => controller.abort(), done };
  }

  async #call(method: string, path: string, body: unknown, auth: boolean): Promise<unknown> {
    const response = await this.#send(method, path, body, auth);
    return response.json();
  }

  async #send(
    method: string,
    path: string,
    body: unknown,
    auth: boolean,
    signal?: AbortSignal,
  ): Promise<Response> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (auth) {
      const token = await this.#store.get();
      if (token === null) {
        throw new BasicError(401, "unauthorized", "no token yet: ask for access first");
      }
      headers.authorization = `Bearer ${token}`;
    }
    let response: Response;
    try {
      const init: RequestInit = { method, headers };
      if (body !== undefined) init.body = JSON.stringify(body);
      if (signal !== undefined) init.signal = signal;
      response = await this.#fetch(`${this.url}${path}`, init);
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new BasicError(0, "network", `the node at ${this.url} did not answer: ${String(error)}`);
    }
    if (!response.ok) {
      let parsed: unknown = null;
      try {
        parsed = await response.json();
      } catch {
        // An answer without a JSON body: the status says it.
      }
      const retry = Number(response.headers.get("retry-after"));
      throw errorOf(response.status, parsed, Number.isFinite(retry) && retry > 0 ? retry : undefined);
    }
    return response;
  }
}

/** The rows of `result` as objects keyed by column name. */
function objects<T>(result: Rows): T[] {
  return result.rows.map((row) => {
    const object: Record<string, Value> = {};
    result.columns.forEach((column, i) => {
      object[column] = row[i] ?? null;
    });
    return object as T;
  });
}

/** A {@link BasicError} from an error body of the API. */
function errorOf(status: number, body: unknown, retryAfter?: number): BasicError {
  const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const code = typeof error?.code === "string" ? (error.code as ErrorCode) : "internal";
  const message = typeof error?.message === "string" ? error.message : `HTTP ${status}`;
  return new BasicError(status, code, message, retryAfter);
}

/** One Server-Sent Event. */
interface ServerEvent {
  name: string;
  data: string;
}

/** The events of a `text/event-stream` body. */
async function* serverEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<ServerEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let name = "message";
  let data: string[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (data.length > 0) yield { name, data: data.join("\n") };
        name = "message";
        data = [];
      } else if (line.startsWith("event:")) {
        name = line.slice(6).trim();
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
  }
}

/** Waits `ms`, or rejects when `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}
