// A real HTTP server on 127.0.0.1 (port 0) that speaks OpenAI's chat-completions format, scripted per test.

import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown> | null;
  rawBody: string;
}

export type Reply =
  | { status?: number; headers?: Record<string, string>; body: string }
  /** Never answer (until the client gives up or the server closes). */
  | { hang: true }
  /** Answer after a delay. */
  | { delayMs: number; reply: Reply };

export type Handler = (req: RecordedRequest, index: number) => Reply;

/** A chat-completions answer whose assistant message is `content`. */
export function chatReply(content: string, extra: { refusal?: string; finishReason?: string } = {}): Reply {
  return {
    status: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      id: 'chatcmpl-test',
      object: 'chat.completion',
      created: 0,
      model: 'test-model',
      choices: [{ index: 0, message: { role: 'assistant', content, ...(extra.refusal ? { refusal: extra.refusal } : {}) }, finish_reason: extra.finishReason ?? 'stop' }],
    }),
  };
}

/** A JSON caption answer, as a model in JSON mode gives it. */
export function captionReply(caption: string, principle?: string): Reply {
  return chatReply(JSON.stringify(principle ? { caption, principle } : { caption }));
}

export function errorReply(status: number, message: string, headers: Record<string, string> = {}): Reply {
  return { status, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ error: { message, type: 'test' } }) };
}

export interface FakeServer {
  url: string;
  /** Base URL as users give it: http://127.0.0.1:PORT/v1 */
  baseUrl: string;
  requests: RecordedRequest[];
  /** Most requests seen in flight at once. */
  maxConcurrent: number;
  setHandler(handler: Handler): void;
  close(): Promise<void>;
}

export async function startFakeOpenAI(handler: Handler): Promise<FakeServer> {
  let current = handler;
  let inFlight = 0;
  const sockets = new Set<import('node:net').Socket>();
  const pending = new Set<NodeJS.Timeout>();
  const state: FakeServer = {
    url: '',
    baseUrl: '',
    requests: [],
    maxConcurrent: 0,
    setHandler: (h) => {
      current = h;
    },
    close: async () => {
      for (const t of pending) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      let body: Record<string, unknown> | null = null;
      try {
        body = JSON.parse(rawBody) as Record<string, unknown>;
      } catch {
        body = null;
      }
      const recorded: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, rawBody };
      const index = state.requests.length;
      state.requests.push(recorded);
      inFlight++;
      state.maxConcurrent = Math.max(state.maxConcurrent, inFlight);
      let finished = false;
      const done = () => {
        if (!finished) {
          finished = true;
          inFlight--;
        }
      };
      res.on('close', done);
      const send = (reply: Reply) => {
        if ('hang' in reply) return;
        if ('delayMs' in reply) {
          const t = setTimeout(() => {
            pending.delete(t);
            send(reply.reply);
          }, reply.delayMs);
          pending.add(t);
          return;
        }
        res.writeHead(reply.status ?? 200, reply.headers ?? { 'content-type': 'application/json' });
        res.end(reply.body);
      };
      if (req.url !== '/v1/chat/completions' || req.method !== 'POST') {
        send(errorReply(404, `no route ${req.method} ${req.url}`));
        return;
      }
      send(current(recorded, index));
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  state.url = `http://127.0.0.1:${port}`;
  state.baseUrl = `${state.url}/v1`;
  return state;
}
