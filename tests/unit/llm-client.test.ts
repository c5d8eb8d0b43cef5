// The chat client against a real OpenAI-format server on 127.0.0.1.

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ChatClient, type ChatClientConfig, LlmError, parseRetryAfter, chatCompletionsUrl, Semaphore } from '../../src/llm/client';
import { captionReply, chatReply, errorReply, type FakeServer, startFakeOpenAI } from '../helpers/llm/fake-openai';

const KEY = 'sk-test-SECRET-0123456789abcdef';
let server: FakeServer;

beforeAll(async () => {
  server = await startFakeOpenAI(() => captionReply('a blue cat'));
});
afterAll(async () => {
  await server.close();
});
afterEach(() => {
  server.requests.length = 0;
  server.maxConcurrent = 0;
});

const messages = [{ role: 'user' as const, content: 'edit "a red cat"' }];

/** A client on the test server; waits between retries are recorded instead of slept through. */
function makeClient(config: Partial<ChatClientConfig> = {}) {
  const sleeps: number[] = [];
  const client = new ChatClient({
    baseUrl: server.baseUrl,
    model: 'test-model',
    apiKey: KEY,
    timeoutMs: 2000,
    retryBaseMs: 10,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    ...config,
  });
  return { client, sleeps };
}

async function caught(p: Promise<unknown>): Promise<LlmError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(LlmError);
    return e as LlmError;
  }
  throw new Error('expected a rejection');
}

describe('ChatClient', () => {
  it('sends an OpenAI chat request and returns the answer', async () => {
    server.setHandler(() => captionReply('a blue cat'));
    const { client } = makeClient({ temperature: 0.3 });
    const result = await client.complete(messages);
    expect(JSON.parse(result.content)).toEqual({ caption: 'a blue cat' });
    expect(result.attempts).toBe(1);
    expect(result.jsonMode).toBe(true);
    const req = server.requests[0];
    expect(req.url).toBe('/v1/chat/completions');
    expect(req.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(req.body).toMatchObject({ model: 'test-model', messages, temperature: 0.3, response_format: { type: 'json_object' } });
  });

  it('retries a 429 after the Retry-After seconds', async () => {
    server.setHandler((_, i) => (i === 0 ? errorReply(429, 'slow down', { 'retry-after': '2' }) : captionReply('ok')));
    const { client, sleeps } = makeClient();
    const result = await client.complete(messages);
    expect(result.attempts).toBe(2);
    expect(sleeps).toEqual([2000]);
  });

  it('honours Retry-After given as an HTTP date', async () => {
    const when = new Date(Date.now() + 3000).toUTCString();
    server.setHandler((_, i) => (i === 0 ? errorReply(429, 'slow down', { 'retry-after': when }) : captionReply('ok')));
    const { client, sleeps } = makeClient();
    await client.complete(messages);
    expect(sleeps).toHaveLength(1);
    expect(sleeps[0]).toBeGreaterThan(1000);
    expect(sleeps[0]).toBeLessThanOrEqual(3000);
  });

  it('really waits for a short Retry-After', async () => {
    server.setHandler((_, i) => (i === 0 ? errorReply(429, 'slow down', { 'retry-after': '0.2' }) : captionReply('ok')));
    const client = new ChatClient({ baseUrl: server.baseUrl, model: 'm', timeoutMs: 2000 });
    const t0 = Date.now();
    await client.complete(messages);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
  });

  it('fails at once when Retry-After is longer than allowed', async () => {
    server.setHandler(() => errorReply(429, 'quota', { 'retry-after': '3600' }));
    const { client, sleeps } = makeClient({ retryMaxMs: 5000 });
    const e = await caught(client.complete(messages));
    expect(e.kind).toBe('rate-limit');
    expect(e.message).toMatch(/3600 s/);
    expect(sleeps).toEqual([]);
  });

  it('backs off exponentially on 500 and gives up after maxRetries', async () => {
    server.setHandler(() => errorReply(500, 'internal error'));
    const { client, sleeps } = makeClient({ maxRetries: 3, retryBaseMs: 100 });
    const e = await caught(client.complete(messages));
    expect(e.status).toBe(500);
    expect(e.message).toMatch(/500.*internal error.*after 4 tries/);
    expect(server.requests).toHaveLength(4);
    expect(sleeps).toHaveLength(3);
    // base * 2^k with jitter in [0.5, 1]
    sleeps.forEach((ms, k) => {
      expect(ms).toBeGreaterThanOrEqual(50 * 2 ** k);
      expect(ms).toBeLessThanOrEqual(100 * 2 ** k);
    });
  });

  it('recovers when a 5xx is followed by success', async () => {
    server.setHandler((_, i) => (i < 2 ? errorReply(503, 'busy') : captionReply('fine')));
    const { client } = makeClient();
    const result = await client.complete(messages);
    expect(result.attempts).toBe(3);
  });

  it('does not retry a 400 and names the problem', async () => {
    server.setHandler(() => errorReply(404, 'model not found'));
    const { client, sleeps } = makeClient();
    const e = await caught(client.complete(messages));
    expect(e.status).toBe(404);
    expect(e.message).toMatch(/model not found.*check the base URL and the model name/);
    expect(sleeps).toEqual([]);
    expect(server.requests).toHaveLength(1);
  });

  it('times out a request that hangs', async () => {
    server.setHandler(() => ({ hang: true }));
    const { client } = makeClient({ timeoutMs: 150, maxRetries: 1 });
    const t0 = Date.now();
    const e = await caught(client.complete(messages));
    expect(e.kind).toBe('timeout');
    expect(e.message).toMatch(/within 150 ms/);
    expect(server.requests).toHaveLength(2);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('retries, then reports a body that is not JSON', async () => {
    server.setHandler(() => ({ status: 200, headers: { 'content-type': 'application/json' }, body: '{"choices": [' }));
    const { client } = makeClient({ maxRetries: 1 });
    const e = await caught(client.complete(messages));
    expect(e.kind).toBe('bad-response');
    expect(e.message).toMatch(/not JSON/);
    expect(server.requests).toHaveLength(2);
  });

  it('reports an answer without choices', async () => {
    server.setHandler(() => ({ status: 200, body: JSON.stringify({ object: 'chat.completion' }) }));
    const { client } = makeClient({ maxRetries: 0 });
    expect((await caught(client.complete(messages))).message).toMatch(/no choices/);
  });

  it('passes a structured refusal through', async () => {
    server.setHandler(() => chatReply('', { refusal: 'I cannot help with that.' }));
    const { client } = makeClient();
    const result = await client.complete(messages);
    expect(result.refusal).toBe('I cannot help with that.');
  });

  it('is cancelled by its AbortSignal while a request hangs', async () => {
    server.setHandler(() => ({ hang: true }));
    const { client } = makeClient({ timeoutMs: 10_000 });
    const controller = new AbortController();
    const t0 = Date.now();
    setTimeout(() => controller.abort(), 50);
    const e = await caught(client.complete(messages, { signal: controller.signal }));
    expect(e.kind).toBe('aborted');
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('is cancelled while waiting to retry', async () => {
    server.setHandler(() => errorReply(503, 'busy', { 'retry-after': '5' }));
    const client = new ChatClient({ baseUrl: server.baseUrl, model: 'm', timeoutMs: 2000 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const t0 = Date.now();
    const e = await caught(client.complete(messages, { signal: controller.signal }));
    expect(e.kind).toBe('aborted');
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(server.requests).toHaveLength(1);
  });

  it('fails fast with an already aborted signal', async () => {
    const { client } = makeClient();
    const e = await caught(client.complete(messages, { signal: AbortSignal.abort() }));
    expect(e.kind).toBe('aborted');
    expect(server.requests).toHaveLength(0);
  });

  it('drops response_format when the server rejects it, and remembers', async () => {
    server.setHandler((req) =>
      req.body && 'response_format' in req.body ? errorReply(400, "Unsupported parameter: 'response_format'") : chatReply('Caption: a blue cat'),
    );
    const { client } = makeClient();
    const first = await client.complete(messages);
    expect(first.jsonMode).toBe(false);
    expect(first.content).toBe('Caption: a blue cat');
    await client.complete(messages);
    expect(server.requests.map((r) => 'response_format' in (r.body ?? {}))).toEqual([true, false, false]);
  });

  it('reports the rejection when jsonMode is on', async () => {
    server.setHandler(() => errorReply(400, "Unsupported parameter: 'response_format'"));
    const { client } = makeClient({ jsonMode: 'on' });
    const e = await caught(client.complete(messages));
    expect(e.status).toBe(400);
    expect(server.requests).toHaveLength(1);
  });

  it('never sends response_format with jsonMode off', async () => {
    server.setHandler(() => captionReply('x'));
    const { client } = makeClient({ jsonMode: 'off' });
    await client.complete(messages);
    expect(server.requests[0].body).not.toHaveProperty('response_format');
  });

  it('keeps at most `concurrency` requests in flight', async () => {
    server.setHandler(() => ({ delayMs: 40, reply: captionReply('x') }));
    const { client } = makeClient({ concurrency: 2 });
    await Promise.all(Array.from({ length: 6 }, () => client.complete(messages)));
    expect(server.requests).toHaveLength(6);
    expect(server.maxConcurrent).toBe(2);
  });

  it('never shows the API key in errors, JSON or inspection', async () => {
    // A server that echoes the Authorization header back in its error.
    server.setHandler((req) => errorReply(401, `invalid key ${req.headers.authorization}`));
    const { client } = makeClient();
    const e = await caught(client.complete(messages));
    expect(e.message).toMatch(/401/);
    expect(e.message).toMatch(/check the API key/);
    expect(e.message).not.toContain(KEY);
    expect(e.message).toContain('[redacted]');
    expect(JSON.stringify(e)).not.toContain(KEY);
    expect(JSON.stringify(client)).not.toContain(KEY);
    const { inspect } = await import('node:util');
    expect(inspect(client, { showHidden: true, depth: 5 })).not.toContain(KEY);
    expect(client.hasApiKey).toBe(true);
  });

  it('reports an unreachable server as a network error without the key', async () => {
    const closed = await startFakeOpenAI(() => captionReply('x'));
    const base = closed.baseUrl;
    await closed.close();
    const client = new ChatClient({ baseUrl: base, model: 'm', apiKey: KEY, maxRetries: 1, retryBaseMs: 1 });
    const e = await caught(client.complete(messages));
    expect(e.kind).toBe('network');
    expect(e.message).not.toContain(KEY);
  });
});

describe('client helpers', () => {
  it('parses Retry-After as seconds or an HTTP date', () => {
    const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT');
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter('1.5', now)).toBe(1500);
    expect(parseRetryAfter('Wed, 21 Oct 2015 07:28:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Wed, 21 Oct 2015 07:27:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeNull();
    expect(parseRetryAfter(null, now)).toBeNull();
  });

  it('builds the completions URL from a base URL', () => {
    expect(chatCompletionsUrl('http://localhost:11434/v1')).toBe('http://localhost:11434/v1/chat/completions');
    expect(chatCompletionsUrl('https://api.example.com/v1/')).toBe('https://api.example.com/v1/chat/completions');
    expect(chatCompletionsUrl('http://h/v1/chat/completions')).toBe('http://h/v1/chat/completions');
    expect(() => chatCompletionsUrl('localhost:11434')).toThrow(LlmError);
    expect(() => chatCompletionsUrl('ftp://x/v1')).toThrow(/http/);
    expect(() => new ChatClient({ baseUrl: 'http://x/v1', model: ' ' })).toThrow(/model/);
  });

  it('semaphore hands slots over in order and lets waiters abort', async () => {
    const sem = new Semaphore(1);
    const release = await sem.acquire();
    const order: string[] = [];
    const controller = new AbortController();
    const a = sem.acquire(controller.signal).then(
      () => order.push('a'),
      () => order.push('a-aborted'),
    );
    const b = sem.acquire().then((r) => {
      order.push('b');
      r();
    });
    controller.abort();
    await a;
    release();
    await b;
    expect(order).toEqual(['a-aborted', 'b']);
    expect(sem.running).toBe(0);
  });
});
