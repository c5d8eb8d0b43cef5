// The LLM editor (prompt -> answer -> extraction -> validation -> retry) against a loopback OpenAI server,
// and the extraction and validation rules on their own.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatClient } from '../../src/llm/client';
import { LlmCaptionEditor } from '../../src/llm/editor';
import { extractCaption } from '../../src/llm/extract';
import { makeNegatives } from '../../src/llm/generate';
import { buildEditMessages, defaultTemplates, principleFor, renderTemplate } from '../../src/llm/principles';
import { contentWords, validateAnswer, validateNegative } from '../../src/llm/validate';
import { loadClipTokenizer } from '../../src/models/tokenizer-node';
import type { ClipTokenizer } from '../../src/models/tokenizer';
import { captionReply, chatReply, errorReply, type FakeServer, type Handler, startFakeOpenAI } from '../helpers/llm/fake-openai';
import { tinyModelDir } from '../helpers/llm/paths';

const ORIGINAL = 'a red cube to the left of a blue ball on a wooden table';
let server: FakeServer;
let tokenizer: ClipTokenizer;

beforeAll(async () => {
  server = await startFakeOpenAI(() => captionReply('x'));
  tokenizer = await loadClipTokenizer(tinyModelDir);
});
afterAll(async () => {
  await server.close();
});

function editorWith(handler: Handler, maxAttempts = 3) {
  server.requests.length = 0;
  server.setHandler(handler);
  const client = new ChatClient({ baseUrl: server.baseUrl, model: 'test-model', timeoutMs: 2000, maxRetries: 1, retryBaseMs: 1 });
  return new LlmCaptionEditor({ client, maxAttempts, countTokens: (t) => tokenizer.countTokens(t) });
}

describe('LlmCaptionEditor', () => {
  it('returns a valid edit with the requested principle', async () => {
    const editor = editorWith(() => captionReply('a green cube to the left of a blue ball on a wooden table', 'attribute'));
    const r = await editor.edit({ caption: ORIGINAL, principle: 'attribute' });
    expect(r).toEqual({ ok: true, caption: 'a green cube to the left of a blue ball on a wooden table', principle: 'attribute', source: 'llm', attempts: 1 });
    const user = (server.requests[0].body!.messages as { content: string }[])[1].content;
    expect(user).toContain(ORIGINAL);
    expect(user).toMatch(/colour, material, texture/);
  });

  it('retries an answer identical to the input, then records the failure', async () => {
    const editor = editorWith(() => captionReply(`${ORIGINAL.toUpperCase()}.`));
    const r = await editor.edit({ caption: ORIGINAL, principle: 'content' });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.reason).toMatch(/identical to the original caption \(after 3 tries\)/);
      expect(r.attempts).toBe(3);
      expect(r.principle).toBe('content');
    }
    expect(server.requests).toHaveLength(3);
    // The retry tells the model why its answer was rejected.
    const retryMessages = server.requests[1].body!.messages as { content: string }[];
    expect(retryMessages.at(-1)!.content).toMatch(/rejected: identical/);
  });

  it('accepts a later valid answer after an invalid one', async () => {
    const editor = editorWith((_, i) => (i === 0 ? captionReply(ORIGINAL) : captionReply('a red cube to the right of a blue ball on a wooden table')));
    const r = await editor.edit({ caption: ORIGINAL, principle: 'spatial' });
    expect(r.ok && r.attempts).toBe(2);
  });

  it('records a refusal (in prose or in the refusal field)', async () => {
    let editor = editorWith(() => chatReply("I'm sorry, but I can't help with changing this caption."), 2);
    let r = await editor.edit({ caption: ORIGINAL, principle: 'context' });
    expect(!r.ok && r.reason).toMatch(/^the model refused/);
    editor = editorWith(() => chatReply('', { refusal: 'Not allowed.' }), 1);
    r = await editor.edit({ caption: ORIGINAL, principle: 'context' });
    expect(!r.ok && r.reason).toMatch(/the model refused: Not allowed/);
  });

  it('rejects an over-long answer by the 77-token budget', async () => {
    const long = `${ORIGINAL}, ${Array.from({ length: 80 }, (_, i) => `detail${i}`).join(' ')}`;
    const editor = editorWith(() => captionReply(long), 2);
    const r = await editor.edit({ caption: ORIGINAL, principle: 'content' });
    expect(!r.ok && r.reason).toMatch(/tokens, over the 75-token budget/);
  });

  it('extracts the caption from malformed JSON and from prose', async () => {
    let editor = editorWith(() => chatReply('{"caption": "a red cube to the left of a blue ball on a glass table", "principle": "attribute"'));
    let r = await editor.edit({ caption: ORIGINAL, principle: 'attribute' });
    expect(r.ok && r.caption).toBe('a red cube to the left of a blue ball on a glass table');
    editor = editorWith(() => chatReply('Sure! Here is the edited caption:\n\n"a red cube to the left of a blue ball on a wooden table at night"\n\nI changed the time of day.'));
    r = await editor.edit({ caption: ORIGINAL, principle: 'context' });
    expect(r.ok && r.caption).toBe('a red cube to the left of a blue ball on a wooden table at night');
    editor = editorWith(() => chatReply('```json\n{"caption": "two red cubes to the left of a blue ball on a wooden table"}\n```'));
    r = await editor.edit({ caption: ORIGINAL, principle: 'content' });
    expect(r.ok && r.caption).toBe('two red cubes to the left of a blue ball on a wooden table');
  });

  it('fails when the answer holds nothing usable', async () => {
    const editor = editorWith(() => chatReply('{"caption": '), 1);
    const r = await editor.edit({ caption: ORIGINAL, principle: 'content' });
    expect(!r.ok && r.reason).toMatch(/no caption in the answer/);
  });

  it('rejects several captions in one answer', async () => {
    const editor = editorWith(() => chatReply(JSON.stringify({ captions: ['a green cube', 'a pink cube'] })), 1);
    const r = await editor.edit({ caption: ORIGINAL, principle: 'attribute' });
    expect(!r.ok && r.reason).toMatch(/more than one caption in the answer \(2 captions\)/);
  });

  it('records the principle a mix answer names', async () => {
    const editor = editorWith(() => captionReply('a red cube to the left of a blue ball on a wooden table in the snow', 'context'));
    const r = await editor.edit({ caption: ORIGINAL, principle: 'mix' });
    expect(r.ok && r.principle).toBe('context');
    const named = editorWith(() => captionReply('a red cube to the left of a blue ball on a stone table', 'whatever'));
    const r2 = await named.edit({ caption: ORIGINAL, principle: 'mix' });
    expect(r2.ok && r2.principle).toBe('other');
  });

  it('records an HTTP failure with its reason and no key', async () => {
    server.requests.length = 0;
    server.setHandler(() => errorReply(500, 'boom'));
    const client = new ChatClient({ baseUrl: server.baseUrl, model: 'm', apiKey: 'sk-secret-key-xyz', maxRetries: 1, retryBaseMs: 1 });
    const editor = new LlmCaptionEditor({ client });
    const r = await editor.edit({ caption: ORIGINAL, principle: 'content' });
    expect(!r.ok && r.reason).toMatch(/500.*boom/);
    expect(JSON.stringify(r)).not.toContain('sk-secret-key-xyz');
  });

  it('makes N negatives, cycling principles and avoiding repeats', async () => {
    const answers = ['a red cube to the left of a green ball on a wooden table', 'a red cube to the left of a green ball on a wooden table', 'a red cube above a blue ball on a wooden table'];
    const editor = editorWith((_, i) => captionReply(answers[Math.min(i, answers.length - 1)]));
    const res = await makeNegatives(editor, { caption: ORIGINAL, count: 2, principles: ['attribute', 'spatial'] });
    expect(res.made.map((m) => [m.principle, m.caption])).toEqual([
      ['attribute', answers[0]],
      ['spatial', answers[2]],
    ]);
    expect(res.failed).toEqual([]);
    expect(res.cancelled).toBe(false);
  });

  it('stops on cancellation, keeping what was made', async () => {
    const controller = new AbortController();
    // Cancelled while the second request hangs (not after a fixed delay: on a loaded machine the first
    // answer may take longer than any delay chosen).
    const editor = editorWith((_, i) => {
      if (i === 0) return captionReply('a red cube to the left of a green ball on a wooden table');
      setTimeout(() => controller.abort(), 0);
      return { hang: true };
    });
    const res = await makeNegatives(editor, { caption: ORIGINAL, count: 3, principles: ['attribute'], signal: controller.signal });
    expect(res.cancelled).toBe(true);
    expect(res.made).toHaveLength(1);
  });
});

describe('extractCaption', () => {
  it('reads JSON, fenced JSON, labelled prose and plain lines', () => {
    expect(extractCaption('{"caption": "a cat"}').captions).toEqual(['a cat']);
    expect(extractCaption('{"negative_caption": "a cat", "principle": "content"}')).toMatchObject({ captions: ['a cat'], principle: 'content' });
    expect(extractCaption('Here you go:\n```json\n{"caption": "a cat"}\n```').captions).toEqual(['a cat']);
    expect(extractCaption('**Edited caption:** "A dog on a mat."\nPrinciple: content').captions).toEqual(['A dog on a mat.']);
    expect(extractCaption('Edited caption: a dog on a mat').captions).toEqual(['a dog on a mat']);
    expect(extractCaption('"a dog on a mat"').captions).toEqual(['a dog on a mat']);
    expect(extractCaption('1. a dog\n2. a cow').captions).toEqual(['a dog', 'a cow']);
    expect(extractCaption('').captions).toEqual([]);
  });

  it('treats the answer as plain text (control characters removed)', () => {
    expect(extractCaption('{"caption": "a cat\\u0007 <b>on</b> a mat"}').captions).toEqual(['a cat <b>on</b> a mat']);
  });
});

describe('validateNegative', () => {
  const opts = { principle: 'content' as const };
  it('needs content words to differ', () => {
    expect(contentWords('The cat is on a mat.')).toEqual(['cat', 'on', 'mat']);
    expect(validateAnswer('a cat on a mat', 'the cat is on the mat', opts)).toMatchObject({ ok: false, code: 'paraphrase' });
    expect(validateAnswer('a cat on a mat', 'a cat under a mat', opts)).toMatchObject({ ok: true, principle: 'content' });
    expect(validateAnswer('a cat on a mat', 'A CAT ON A MAT!', opts)).toMatchObject({ ok: false, code: 'identical' });
  });

  it('accepts a swap for attribute and spatial edits only', () => {
    const swapped = 'a blue cube and a red ball';
    expect(validateNegative('a red cube and a blue ball', swapped, { principle: 'attribute' }).ok).toBe(true);
    expect(validateNegative('a red cube and a blue ball', swapped, { principle: 'spatial' }).ok).toBe(true);
    expect(validateNegative('a red cube and a blue ball', swapped, { principle: 'context' })).toMatchObject({ ok: false, code: 'paraphrase' });
  });

  it('rejects repeats, empties and long answers', () => {
    expect(validateNegative('a cat', 'a dog', { principle: 'content', avoid: ['A dog.'] })).toMatchObject({ ok: false, code: 'duplicate' });
    expect(validateNegative('a cat', '  ', { principle: 'content' })).toMatchObject({ ok: false, code: 'empty' });
    expect(validateNegative('a cat', 'a dog '.repeat(100), { principle: 'content' })).toMatchObject({ ok: false, code: 'too-long' });
    expect(validateNegative('a cat', 'x'.repeat(10_000), { principle: 'content', countTokens: () => 1 })).toMatchObject({ ok: false, code: 'too-long' });
  });
});

describe('principles', () => {
  it('have an editable template for each principle and mix', () => {
    const t = defaultTemplates();
    for (const p of ['content', 'attribute', 'spatial', 'context', 'mix'] as const) expect(t[p]).toContain('{{caption}}');
    const custom = { ...t, content: 'Change an object in: {{caption}}' };
    const msgs = buildEditMessages({ caption: 'a cat', principle: 'content', avoid: ['a dog'] }, custom);
    expect(msgs.map((m) => m.role)).toEqual(['system', 'user']);
    expect(msgs[1].content).toBe('Change an object in: a cat');
    expect(renderTemplate('{{a}} {{ b }} {{c}}', { a: '1', b: '2' })).toBe('1 2 {{c}}');
    expect(buildEditMessages({ caption: 'a cat', principle: 'spatial', avoid: ['a cat under a mat'] })[1].content).toContain('"a cat under a mat"');
  });

  it('cycle through the chosen list', () => {
    expect([0, 1, 2, 3, 4].map((k) => principleFor(['content', 'spatial'], k))).toEqual(['content', 'spatial', 'content', 'spatial', 'content']);
  });
});

describe('settings', () => {
  it('keep the key out of storage unless asked, and default to the rule editor', async () => {
    const { settingsForStorage, editorFromSettings, DEFAULT_LLM_SETTINGS } = await import('../../src/llm/settings');
    const s = { ...DEFAULT_LLM_SETTINGS, baseUrl: server.baseUrl, model: 'm', apiKey: 'sk-abc-123' };
    expect(settingsForStorage(s)).not.toHaveProperty('apiKey');
    expect(settingsForStorage({ ...s, rememberApiKey: true }).apiKey).toBe('sk-abc-123');
    expect(editorFromSettings(null).source).toBe('rule');
    expect(editorFromSettings({ ...s, baseUrl: '' }).source).toBe('rule');
    expect(editorFromSettings(s).source).toBe('llm');
  });
});
