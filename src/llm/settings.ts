// LLM settings as the app stores them, and the editor they give. The API key stays in memory: it is
// written to storage only when the user opts in (rememberApiKey), and never to exports or checkpoints.

import { ChatClient, type ChatClientConfig } from './client';
import { LlmCaptionEditor } from './editor';
import type { PromptTemplates } from './principles';
import { RuleCaptionEditor } from './rules';
import type { CaptionEditor } from './types';

export interface LlmSettings {
  /** Empty: no endpoint, the rule editor is used. */
  baseUrl: string;
  model: string;
  apiKey?: string;
  /** Keep the key in browser storage (off by default). */
  rememberApiKey?: boolean;
  temperature?: number;
  concurrency?: number;
  timeoutMs?: number;
  maxRetries?: number;
  jsonMode?: ChatClientConfig['jsonMode'];
  /** Tries per negative when answers are invalid. */
  maxAttempts?: number;
  templates?: PromptTemplates;
}

export const DEFAULT_LLM_SETTINGS: LlmSettings = {
  baseUrl: '',
  model: '',
  rememberApiKey: false,
  temperature: 0.7,
  concurrency: 4,
  timeoutMs: 60_000,
  maxRetries: 4,
  jsonMode: 'auto',
  maxAttempts: 3,
};

/** Common OpenAI-compatible servers and their usual base URLs. */
export const ENDPOINT_PRESETS: readonly { name: string; baseUrl: string; needsKey: boolean }[] = [
  { name: 'OpenAI', baseUrl: 'https://api.openai.com/v1', needsKey: true },
  { name: 'Ollama', baseUrl: 'http://localhost:11434/v1', needsKey: false },
  { name: 'LM Studio', baseUrl: 'http://localhost:1234/v1', needsKey: false },
  { name: 'vLLM', baseUrl: 'http://localhost:8000/v1', needsKey: false },
  { name: 'llama.cpp server', baseUrl: 'http://localhost:8080/v1', needsKey: false },
];

/** What may be written to storage: the key only if the user asked to remember it. */
export function settingsForStorage(settings: LlmSettings): LlmSettings {
  const { apiKey, ...rest } = settings;
  return settings.rememberApiKey && apiKey ? { ...rest, apiKey } : rest;
}

export function hasEndpoint(settings: LlmSettings | null | undefined): settings is LlmSettings {
  return !!settings && settings.baseUrl.trim() !== '' && settings.model.trim() !== '';
}

export function clientFromSettings(settings: LlmSettings, extra: Partial<ChatClientConfig> = {}): ChatClient {
  return new ChatClient({
    baseUrl: settings.baseUrl.trim(),
    model: settings.model.trim(),
    apiKey: settings.apiKey,
    temperature: settings.temperature,
    concurrency: settings.concurrency,
    timeoutMs: settings.timeoutMs,
    maxRetries: settings.maxRetries,
    jsonMode: settings.jsonMode,
    ...extra,
  });
}

export interface EditorOptions {
  /** Seed of the rule editor. */
  seed?: number | string;
  /** ClipTokenizer.countTokens, for the 77-token check. */
  countTokens?: (text: string) => number;
}

/** The LLM editor when an endpoint is set, else the rule editor (the default). */
export function editorFromSettings(settings: LlmSettings | null | undefined, options: EditorOptions = {}): CaptionEditor {
  if (!hasEndpoint(settings)) return new RuleCaptionEditor({ seed: options.seed, countTokens: options.countTokens });
  return new LlmCaptionEditor({
    client: clientFromSettings(settings),
    templates: settings.templates,
    maxAttempts: settings.maxAttempts,
    countTokens: options.countTokens,
    temperature: settings.temperature,
  });
}
