// "Test connection" against a real HTTP server on 127.0.0.1: each answer a server can give is put in the
// right words (wrong key, wrong model or URL, unreachable), and a working server says so.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LlmError } from '../../src/llm/client';
import { classifyConnectionError, testConnection } from '../../src/llm/connection';

const ORIGIN = 'http://localhost:5173';
let server: Server;
let base: string;
const seen: { path: string; auth: string | undefined; body: { model?: string; max_tokens?: number } }[] = [];

function reply(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

beforeAll(async () => {
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let text = '';
    req.on('data', (c) => (text += c));
    req.on('end', () => {
      const body = JSON.parse(text || '{}');
      seen.push({ path: req.url ?? '', auth: req.headers.authorization, body });
      // /bad-key/v1 refuses every key; /v1 knows one model.
      if (req.url?.startsWith('/bad-key/')) return reply(res, 401, { error: { message: 'Incorrect API key provided' } });
      if (req.url !== '/v1/chat/completions') return reply(res, 404, { error: 'not found' });
      if (body.model !== 'tiny') return reply(res, 404, { error: { message: `model "${body.model}" not found, try pulling it first` } });
      reply(res, 200, { choices: [{ message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }] });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('testConnection', () => {
  it('a working server answers, with one small request and the key sent', async () => {
    const r = await testConnection({ baseUrl: `${base}/v1`, model: 'tiny', apiKey: 'sk-secret' }, ORIGIN);
    expect(r).toEqual({ ok: true, url: `${base}/v1/chat/completions`, answer: 'ok' });
    const last = seen.at(-1)!;
    expect(last.auth).toBe('Bearer sk-secret');
    expect(last.body.max_tokens).toBe(16);
  });

  it('401: the key is wrong, and the key is not in the message', async () => {
    const r = await testConnection({ baseUrl: `${base}/bad-key/v1`, model: 'tiny', apiKey: 'sk-secret' }, ORIGIN);
    if (r.ok) throw new Error('expected a failure');
    expect(r.problem.kind).toBe('key');
    expect(r.problem.title).toMatch(/refused the API key \(HTTP 401\)/);
    expect(JSON.stringify(r.problem)).not.toContain('sk-secret');
  });

  it('404 for an unknown model: the model or the URL is wrong', async () => {
    const r = await testConnection({ baseUrl: `${base}/v1`, model: 'nope', apiKey: '' }, ORIGIN);
    if (r.ok) throw new Error('expected a failure');
    expect(r.problem.kind).toBe('model');
    expect(r.problem.detail).toMatch(/model "nope" not found/);
  });

  it('404 for a wrong path: the same advice (model or URL)', async () => {
    const r = await testConnection({ baseUrl: `${base}/api`, model: 'tiny' }, ORIGIN);
    if (r.ok) throw new Error('expected a failure');
    expect(r.problem.kind).toBe('model');
  });

  it('a closed port: unreachable, with how to allow the origin on common servers', async () => {
    // A port that was just free and is closed again: nothing listens there.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const r = await testConnection({ baseUrl: `http://127.0.0.1:${port}/v1`, model: 'tiny' }, ORIGIN);
    if (r.ok) throw new Error('expected a failure');
    expect(r.problem.kind).toBe('unreachable');
    const help = r.problem.help.join('\n');
    expect(help).toContain(`OLLAMA_ORIGINS=${ORIGIN}`);
    expect(help).toContain('Enable CORS');
    expect(help).toContain(`--allowed-origins '["${ORIGIN}"]'`);
  });

  it('a URL that is not one is a settings problem, found before any request', async () => {
    const r = await testConnection({ baseUrl: 'localhost 11434', model: 'tiny' }, ORIGIN);
    if (r.ok) throw new Error('expected a failure');
    expect(r.problem.kind).toBe('config');
  });
});

describe('classifyConnectionError', () => {
  it('403 is a key problem; 500 is another error with the status; a timeout says so', () => {
    expect(classifyConnectionError(new LlmError('http', 'forbidden', { status: 403 }), ORIGIN).kind).toBe('key');
    const other = classifyConnectionError(new LlmError('http', 'boom', { status: 500 }), ORIGIN);
    expect(other.kind).toBe('other');
    expect(other.title).toContain('HTTP 500');
    expect(classifyConnectionError(new LlmError('timeout', 'no answer'), ORIGIN).kind).toBe('timeout');
    // vLLM's "model does not exist" comes as a 400 on some versions.
    expect(classifyConnectionError(new LlmError('http', 'The model `x` does not exist.', { status: 400 }), ORIGIN).kind).toBe('model');
  });
});
