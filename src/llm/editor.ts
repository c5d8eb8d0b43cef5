// The LLM caption editor: asks the chat endpoint for one mismatched caption, validates the answer, asks
// again (telling the model why) when it is invalid, and reports a failure with its reason when every try
// is invalid. Never drops or accepts an answer silently.

import { type ChatClient, isAbortError, isServerGone, LlmError } from './client';
import { extractCaption } from './extract';
import { buildEditMessages, defaultTemplates, type PromptTemplates } from './principles';
import type { CaptionEditor, EditRequest, EditResult } from './types';
import { validateNegative, type ValidationOptions } from './validate';

export interface LlmEditorOptions {
  client: ChatClient;
  /** Prompt templates (defaults from principles.ts). */
  templates?: PromptTemplates;
  /** Tries per negative when answers are invalid; default 3. HTTP retries are the client's, on top. */
  maxAttempts?: number;
  /** The tokenizer's counter for the 77-token budget (ClipTokenizer.countTokens). */
  countTokens?: ValidationOptions['countTokens'];
  tokenBudget?: number;
  temperature?: number;
}

export class LlmCaptionEditor implements CaptionEditor {
  readonly source = 'llm' as const;
  private readonly templates: PromptTemplates;
  private readonly maxAttempts: number;

  constructor(private readonly options: LlmEditorOptions) {
    this.templates = options.templates ?? defaultTemplates();
    this.maxAttempts = Math.max(1, options.maxAttempts ?? 3);
  }

  async edit(request: EditRequest): Promise<EditResult> {
    const { caption, principle, avoid = [], signal } = request;
    let feedback: string | undefined;
    let lastReason = 'no answer';
    for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
      const messages = buildEditMessages({ caption, principle, avoid, feedback }, this.templates);
      let content: string;
      let refusal: string | undefined;
      try {
        const answer = await this.options.client.complete(messages, { signal, json: true, temperature: this.options.temperature });
        content = answer.content;
        refusal = answer.refusal;
      } catch (e) {
        if (isAbortError(e)) throw e;
        // The client has already retried what is worth retrying: record the failure.
        const reason = e instanceof LlmError ? e.message : `request failed: ${String(e)}`;
        return { ok: false, reason, principle, source: 'llm', attempts: attempt, serverGone: isServerGone(e) };
      }
      const extracted = extractCaption(content);
      if (refusal) extracted.refusal = refusal;
      const verdict = validateNegative(caption, extracted, {
        principle,
        avoid,
        countTokens: this.options.countTokens,
        tokenBudget: this.options.tokenBudget,
      });
      if (verdict.ok) return { ok: true, caption: verdict.caption, principle: verdict.principle, source: 'llm', attempts: attempt };
      lastReason = verdict.reason;
      feedback = verdict.reason;
    }
    return { ok: false, reason: `${lastReason} (after ${this.maxAttempts} tries)`, principle, source: 'llm', attempts: this.maxAttempts };
  }
}
