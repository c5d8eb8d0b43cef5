// "Test connection" for an OpenAI-compatible endpoint: one tiny chat completion sent from the page itself
// (where the browser's CORS rules apply, as they do to the engine worker that later does the real work),
// and its failure put in plain words with what to do about it.

import { createChatClient, LlmError } from './client';
import type { LlmSettings } from './settings';

export type ConnectionProblemKind = 'unreachable' | 'timeout' | 'key' | 'model' | 'config' | 'not-openai' | 'other';

export interface ConnectionProblem {
  kind: ConnectionProblemKind;
  /** One line: what went wrong. */
  title: string;
  /** What to do about it, one step a line. */
  help: string[];
  /** The client's own message (the key already scrubbed from it), for the curious. */
  detail: string;
}

export type ConnectionResult = { ok: true; url: string; answer: string } | { ok: false; problem: ConnectionProblem };

/**
 * Puts a failed test request in words. `origin` is the page's origin (location.origin), which a local
 * server must allow for the browser to let the page read its answers.
 */
export function classifyConnectionError(e: unknown, origin: string): ConnectionProblem {
  const detail = e instanceof Error ? e.message : String(e);
  if (!(e instanceof LlmError)) return { kind: 'other', title: 'The test failed unexpectedly.', help: ['Check the settings and try again.'], detail };
  const status = e.status;
  if (e.kind === 'config') return { kind: 'config', title: 'The settings are not usable.', help: [e.message], detail };
  if (e.kind === 'network') {
    // fetch() rejects with a bare TypeError both when nothing answers and when the server answers without
    // allowing this origin (CORS): the page cannot tell which, so the help covers both.
    return {
      kind: 'unreachable',
      title: "The browser could not reach the server, or the server did not allow this page's origin (CORS).",
      help: [
        'Check that the server is running and that the base URL (host, port, /v1) is right.',
        `Allow this page's origin, ${origin}, on the server:`,
        `Ollama: start it with OLLAMA_ORIGINS=${origin} (for example OLLAMA_ORIGINS=${origin} ollama serve).`,
        'LM Studio: turn on "Enable CORS" in the server settings.',
        `vLLM: start it with --allowed-origins '["${origin}"]'.`,
        'An https page cannot call a plain http server other than localhost (mixed content): use https or run the lab from http://localhost.',
      ],
      detail,
    };
  }
  if (e.kind === 'timeout') {
    return { kind: 'timeout', title: 'The server did not answer in time.', help: ['It may still be loading the model: wait and try again.', 'Check that the base URL points at the chat server.'], detail };
  }
  if (status === 401 || status === 403) {
    return { kind: 'key', title: `The server refused the API key (HTTP ${status}).`, help: ['Check the API key: a wrong, expired or missing key is refused.', 'A local server usually needs no key: leave it empty.'], detail };
  }
  if (status === 404 || (e.kind === 'http' && /model/i.test(e.message) && /not (found|exist)|does not exist|unknown/i.test(e.message))) {
    return {
      kind: 'model',
      title: `The server does not know this model or this URL${status ? ` (HTTP ${status})` : ''}.`,
      help: ['Check the model name exactly as the server lists it (Ollama: ollama list; others: GET /v1/models).', 'Check the base URL: it usually ends in /v1.'],
      detail,
    };
  }
  if (e.kind === 'rate-limit') return { kind: 'other', title: 'The server is limiting requests (HTTP 429).', help: ['The key works, but its quota or rate is spent: wait, or check the account.'], detail };
  if (e.kind === 'bad-response') {
    return { kind: 'not-openai', title: 'The server answered, but not as an OpenAI-compatible chat endpoint.', help: ['Check that the base URL is the OpenAI-compatible one (it usually ends in /v1).'], detail };
  }
  return { kind: 'other', title: `The server answered with an error${status ? ` (HTTP ${status})` : ''}.`, help: ['Read the server\'s message below, and check its logs.'], detail };
}

/** Sends one tiny chat completion (no retries, a short timeout) and says whether it worked. */
export async function testConnection(settings: LlmSettings, origin: string, options: { timeoutMs?: number; fetch?: typeof fetch } = {}): Promise<ConnectionResult> {
  try {
    const client = createChatClient({
      baseUrl: settings.baseUrl.trim(),
      model: settings.model.trim(),
      apiKey: settings.apiKey,
      maxTokens: 16,
      maxRetries: 0,
      timeoutMs: options.timeoutMs ?? 15_000,
      // Plain text: a server without JSON mode would otherwise cost a second request.
      jsonMode: 'off',
      fetch: options.fetch,
    });
    const answer = await client.complete([{ role: 'user', content: 'Reply with the single word: ok' }], { json: false, temperature: 0 });
    return { ok: true, url: client.url, answer: answer.content || answer.refusal || '' };
  } catch (e) {
    return { ok: false, problem: classifyConnectionError(e, origin) };
  }
}
