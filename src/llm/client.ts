// A client for any OpenAI-compatible `POST {base}/chat/completions` (OpenAI, Ollama, LM Studio, vLLM,
// llama.cpp server). fetch-based, so it runs in the browser and in Node 20 alike.
//
// Security: the API key lives in a private field, is sent only in the Authorization header of requests
// to the configured endpoint, and is scrubbed from every error message (servers sometimes echo headers).

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatClientConfig {
  /** e.g. https://api.openai.com/v1 or http://localhost:11434/v1 (a full .../chat/completions URL also works). */
  baseUrl: string;
  model: string;
  apiKey?: string;
  /** Sampling temperature; default 0.7. */
  temperature?: number;
  /** Cap on the answer's length in tokens; default 256. */
  maxTokens?: number;
  /** Requests in flight at once; default 4. */
  concurrency?: number;
  /** Per-request timeout (headers and body), ms; default 60 000. */
  timeoutMs?: number;
  /** Retries after the first try on 429, 5xx, network errors, timeouts and unreadable answers; default 4. */
  maxRetries?: number;
  /** First back-off delay, ms; doubles each retry (with jitter); default 500. */
  retryBaseMs?: number;
  /** Longest wait between tries, ms; a Retry-After above it fails at once; default 30 000. */
  retryMaxMs?: number;
  /**
   * Ask for `response_format: {type: "json_object"}`: 'auto' (default) asks, and stops asking when the
   * server rejects the field; 'on' always asks; 'off' never does.
   */
  jsonMode?: 'auto' | 'on' | 'off';
  /** Extra request headers (never logged either). */
  headers?: Record<string, string>;
  /** Injected for tests; default globalThis.fetch. */
  fetch?: typeof fetch;
  /** Injected for tests; default setTimeout-based sleep that stops early on abort. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Called before each wait between tries (for logs and progress; it never sees the key). */
  onRetry?: (info: { attempt: number; delayMs: number; reason: string }) => void;
}

export interface CompleteOptions {
  signal?: AbortSignal;
  /** Request structured JSON output (subject to config.jsonMode); default true. */
  json?: boolean;
  temperature?: number;
}

export interface ChatResult {
  /** The assistant's text (may be empty when the model refused through the `refusal` field). */
  content: string;
  /** OpenAI's structured refusal message, when the server sent one. */
  refusal?: string;
  finishReason?: string;
  /** Whether response_format was sent with the request that answered. */
  jsonMode: boolean;
  /** HTTP tries made (1 = no retry). */
  attempts: number;
}

export type LlmErrorKind = 'config' | 'http' | 'rate-limit' | 'timeout' | 'aborted' | 'network' | 'bad-response';

export class LlmError extends Error {
  readonly kind: LlmErrorKind;
  readonly status?: number;
  readonly retryable: boolean;
  constructor(kind: LlmErrorKind, message: string, opts: { status?: number; retryable?: boolean } = {}) {
    super(message);
    this.name = 'LlmError';
    this.kind = kind;
    this.status = opts.status;
    this.retryable = opts.retryable ?? false;
  }
}

export function isAbortError(e: unknown): boolean {
  return e instanceof LlmError ? e.kind === 'aborted' : e instanceof Error && e.name === 'AbortError';
}

/** Limits how many tasks run at once; waiting stops early when the waiter's signal aborts. */
export class Semaphore {
  private active = 0;
  private readonly queue: { resolve: () => void; reject: (e: unknown) => void; signal?: AbortSignal; onAbort?: () => void }[] = [];
  constructor(readonly limit: number) {
    if (!(limit >= 1)) throw new Error('concurrency must be at least 1');
  }
  get running(): number {
    return this.active;
  }
  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) throw abortedError(signal);
    if (this.active < this.limit) {
      this.active++;
      return this.releaser();
    }
    await new Promise<void>((resolve, reject) => {
      const entry: (typeof this.queue)[number] = { resolve, reject, signal };
      if (signal) {
        entry.onAbort = () => {
          const i = this.queue.indexOf(entry);
          if (i >= 0) this.queue.splice(i, 1);
          reject(abortedError(signal));
        };
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.queue.push(entry);
    });
    return this.releaser();
  }
  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      if (next) {
        if (next.signal && next.onAbort) next.signal.removeEventListener('abort', next.onAbort);
        next.resolve(); // the slot passes straight to the next waiter
      } else {
        this.active--;
      }
    };
  }
}

function abortedError(signal?: AbortSignal): LlmError {
  const reason = signal?.reason;
  const why = reason instanceof Error ? reason.message : typeof reason === 'string' ? reason : 'cancelled';
  return new LlmError('aborted', `request cancelled (${why})`);
}

function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortedError(signal));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortedError(signal));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Retry-After as milliseconds: delta-seconds ("120", "1.5") or an HTTP date. Null when absent or unreadable.
 */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | null {
  if (value == null) return null;
  const v = value.trim();
  if (v === '') return null;
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const date = Date.parse(v);
  if (Number.isNaN(date)) return null;
  return Math.max(0, date - now);
}

/** `{base}/chat/completions`, unless the base already is that URL. */
export function chatCompletionsUrl(baseUrl: string): string {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new LlmError('config', `LLM base URL is not a URL: ${JSON.stringify(baseUrl.slice(0, 200))}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new LlmError('config', `LLM base URL must be http(s), not ${url.protocol}`);
  if (url.username || url.password) throw new LlmError('config', 'put the API key in the key setting, not in the URL');
  const base = url.href.replace(/\/+$/, '');
  return /\/chat\/completions$/.test(url.pathname.replace(/\/+$/, '')) ? base : `${base}/chat/completions`;
}

const MAX_ERROR_DETAIL = 300;

export class ChatClient {
  readonly baseUrl: string;
  readonly model: string;
  readonly url: string;
  readonly concurrency: number;
  readonly timeoutMs: number;
  readonly maxRetries: number;
  #apiKey: string | undefined;
  #headers: Record<string, string>;
  private readonly config: Omit<ChatClientConfig, 'apiKey' | 'headers'>;
  private readonly semaphore: Semaphore;
  private readonly doFetch: typeof fetch;
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Set when the server rejected response_format: later requests go without it. */
  private jsonModeRejected = false;

  constructor(config: ChatClientConfig) {
    const { apiKey, headers, ...rest } = config;
    if (!config.model || !config.model.trim()) throw new LlmError('config', 'an LLM model name is required');
    this.url = chatCompletionsUrl(config.baseUrl);
    this.baseUrl = config.baseUrl;
    this.model = config.model;
    this.#apiKey = apiKey && apiKey.trim() ? apiKey.trim() : undefined;
    this.#headers = { ...(headers ?? {}) };
    this.config = rest;
    this.concurrency = Math.max(1, Math.floor(config.concurrency ?? 4));
    this.timeoutMs = config.timeoutMs ?? 60_000;
    this.maxRetries = Math.max(0, Math.floor(config.maxRetries ?? 4));
    this.semaphore = new Semaphore(this.concurrency);
    const f = config.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new LlmError('config', 'fetch is not available in this environment');
    this.doFetch = f.bind(globalThis) as typeof fetch;
    this.sleep = config.sleep ?? defaultSleep;
  }

  /** Whether a key is set (the key itself is never readable from outside). */
  get hasApiKey(): boolean {
    return this.#apiKey !== undefined;
  }

  /** Requests in flight now. */
  get active(): number {
    return this.semaphore.running;
  }

  /** Safe to log or serialise: no key, no headers. */
  toJSON(): Record<string, unknown> {
    return { url: this.url, model: this.model, concurrency: this.concurrency, timeoutMs: this.timeoutMs, hasApiKey: this.hasApiKey };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `ChatClient ${JSON.stringify(this.toJSON())}`;
  }

  /** Replaces the key (and any extra header value) wherever it occurs in `text`. */
  redact(text: string): string {
    let out = text;
    const secrets = [this.#apiKey, ...Object.values(this.#headers)].filter((s): s is string => !!s && s.length >= 4);
    for (const secret of secrets) out = out.split(secret).join('[redacted]');
    return out;
  }

  /** Sends one chat completion request (with retries) and returns the assistant's answer. */
  async complete(messages: readonly ChatMessage[], options: CompleteOptions = {}): Promise<ChatResult> {
    const { signal } = options;
    const maxRetries = this.maxRetries;
    const retryBase = this.config.retryBaseMs ?? 500;
    const retryMax = this.config.retryMaxMs ?? 30_000;
    let attempt = 0;
    for (;;) {
      if (signal?.aborted) throw abortedError(signal);
      attempt++;
      const wantJson = (options.json ?? true) && this.jsonModeWanted();
      let error: LlmError;
      let retryAfterMs: number | null = null;
      try {
        return { ...(await this.attempt(messages, wantJson, options)), attempts: attempt };
      } catch (e) {
        if (e instanceof JsonModeRejected) {
          // Not a failure of the server: ask again without response_format, at no cost to the retry budget.
          this.jsonModeRejected = true;
          attempt--;
          continue;
        }
        error = e instanceof LlmError ? e : new LlmError('network', this.redact(`request failed: ${describe(e)}`), { retryable: true });
        if (e instanceof RetryableHttp) retryAfterMs = e.retryAfterMs;
      }
      if (error.kind === 'aborted' || !error.retryable || attempt > maxRetries) {
        if (error.retryable && attempt > 1) {
          throw new LlmError(error.kind, `${error.message} (after ${attempt} tries)`, { status: error.status, retryable: false });
        }
        throw error;
      }
      let delay = Math.min(retryMax, retryBase * 2 ** (attempt - 1)) * (0.5 + Math.random() * 0.5);
      if (retryAfterMs !== null) {
        if (retryAfterMs > retryMax) {
          throw new LlmError(error.kind, `${error.message}; the server asks to wait ${Math.ceil(retryAfterMs / 1000)} s, longer than the ${Math.ceil(retryMax / 1000)} s allowed`, {
            status: error.status,
          });
        }
        delay = retryAfterMs;
      }
      this.config.onRetry?.({ attempt, delayMs: Math.round(delay), reason: error.message });
      await this.sleep(delay, signal);
    }
  }

  private jsonModeWanted(): boolean {
    const mode = this.config.jsonMode ?? 'auto';
    return mode === 'on' || (mode === 'auto' && !this.jsonModeRejected);
  }

  /** One HTTP try, inside a concurrency slot, under the per-request timeout. */
  private async attempt(messages: readonly ChatMessage[], json: boolean, options: CompleteOptions): Promise<Omit<ChatResult, 'attempts'>> {
    const release = await this.semaphore.acquire(options.signal);
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new Error('timeout'));
    }, this.timeoutMs);
    const onAbort = () => controller.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const fail = (e: unknown): never => {
      if (timedOut) throw new LlmError('timeout', `no answer from ${this.url} within ${this.timeoutMs} ms`, { retryable: true });
      if (options.signal?.aborted) throw abortedError(options.signal);
      throw e instanceof LlmError ? e : new LlmError('network', this.redact(`request to ${this.url} failed: ${describe(e)}`), { retryable: true });
    };
    try {
      const body: Record<string, unknown> = {
        model: this.model,
        messages,
        temperature: options.temperature ?? this.config.temperature ?? 0.7,
        max_tokens: this.config.maxTokens ?? 256,
        stream: false,
      };
      if (json) body.response_format = { type: 'json_object' };
      const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json', ...this.#headers };
      if (this.#apiKey) headers.authorization = `Bearer ${this.#apiKey}`;
      let response: Response;
      let text: string;
      try {
        response = await this.doFetch(this.url, { method: 'POST', headers, body: JSON.stringify(body), signal: controller.signal });
        text = await response.text();
      } catch (e) {
        return fail(e);
      }
      if (!response.ok) this.httpError(response, text, json);
      return this.parseAnswer(text, json);
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      release();
    }
  }

  private httpError(response: Response, text: string, json: boolean): never {
    const status = response.status;
    const detail = this.redact(errorDetail(text));
    // In 'auto' mode a server that rejects response_format is asked again without it ('on' insists).
    if (json && (this.config.jsonMode ?? 'auto') === 'auto' && (status === 400 || status === 422) && /response_format|json_object|json mode/i.test(text)) {
      throw new JsonModeRejected();
    }
    const where = `${this.url} answered ${status}${response.statusText ? ` ${response.statusText}` : ''}`;
    const message = detail ? `${where}: ${detail}` : where;
    if (status === 429 || status >= 500) {
      const e = new RetryableHttp(status === 429 ? 'rate-limit' : 'http', message, status);
      e.retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
      throw e;
    }
    const hint = status === 401 || status === 403 ? ' (check the API key)' : status === 404 ? ' (check the base URL and the model name)' : '';
    throw new LlmError('http', message + hint, { status });
  }

  private parseAnswer(text: string, json: boolean): Omit<ChatResult, 'attempts'> {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      throw new LlmError('bad-response', `${this.url} sent a body that is not JSON: ${this.redact(snippet(text))}`, { retryable: true });
    }
    const choice = (data as { choices?: unknown[] } | null)?.choices?.[0] as
      | { message?: { content?: unknown; refusal?: unknown }; text?: unknown; finish_reason?: unknown }
      | undefined;
    if (!choice || typeof choice !== 'object') {
      const err = errorDetail(text);
      throw new LlmError('bad-response', `${this.url} sent no choices${err ? `: ${this.redact(err)}` : ''}`, { retryable: true });
    }
    const content = contentText(choice.message?.content ?? choice.text);
    const refusal = typeof choice.message?.refusal === 'string' && choice.message.refusal ? choice.message.refusal : undefined;
    if (content === null && !refusal) throw new LlmError('bad-response', `${this.url} sent a choice without message content`, { retryable: true });
    return {
      content: content ?? '',
      refusal,
      finishReason: typeof choice.finish_reason === 'string' ? choice.finish_reason : undefined,
      jsonMode: json,
    };
  }
}

class JsonModeRejected extends Error {}

class RetryableHttp extends LlmError {
  retryAfterMs: number | null = null;
  constructor(kind: LlmErrorKind, message: string, status: number) {
    super(kind, message, { status, retryable: true });
  }
}

/** Message content as text: a string, or OpenAI's array of content parts. */
function contentText(content: unknown): string | null {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    const parts = content.map((p) => (typeof p === 'string' ? p : typeof p?.text === 'string' ? p.text : '')).join('');
    return parts;
  }
  return null;
}

function snippet(text: string): string {
  const s = text.replace(/\s+/g, ' ').trim();
  return s.length > MAX_ERROR_DETAIL ? `${s.slice(0, MAX_ERROR_DETAIL)}...` : s;
}

/** The server's own error message if the body is OpenAI-style JSON, else a short snippet of the body. */
function errorDetail(text: string): string {
  try {
    const data = JSON.parse(text) as { error?: unknown; message?: unknown; detail?: unknown };
    const err = data?.error;
    const msg =
      typeof err === 'string' ? err : typeof (err as { message?: unknown })?.message === 'string' ? (err as { message: string }).message : typeof data?.message === 'string' ? data.message : typeof data?.detail === 'string' ? data.detail : '';
    if (msg) return snippet(msg);
  } catch {
    // not JSON: fall through
  }
  return snippet(text);
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    return cause instanceof Error && cause.message ? `${e.message} (${cause.message})` : e.message;
  }
  return String(e);
}

/**
 * Whether every further request would meet this error too, so a batch should stop rather than try each
 * remaining item: the server cannot be reached at all (after the retries), or it refuses the key (401,
 * 403) or does not know the endpoint or model (404).
 */
export function isServerGone(e: unknown): boolean {
  return e instanceof LlmError && (e.kind === 'network' || (e.kind === 'http' && (e.status === 401 || e.status === 403 || e.status === 404)));
}

/** Creates a client; throws LlmError('config') for a bad URL or a missing model name. */
export function createChatClient(config: ChatClientConfig): ChatClient {
  return new ChatClient(config);
}
