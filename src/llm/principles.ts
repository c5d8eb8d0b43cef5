// The four editing principles of TPO and the prompts that ask an LLM for one mismatched caption.
// Every template is plain text with {{placeholders}}, so the app can let the user edit them.

import { type Principle, type PrincipleChoice, PRINCIPLES } from '../data/vocabulary';
import type { ChatMessage } from './client';

export interface PrincipleInfo {
  key: PrincipleChoice;
  label: string;
  /** What the principle changes, in words an LLM and a user both understand. */
  description: string;
  /** An example edit shown to the LLM. */
  example: { from: string; to: string };
}

export const PRINCIPLE_INFO: Record<PrincipleChoice, PrincipleInfo> = {
  content: {
    key: 'content',
    label: 'Content',
    description: "which objects are present, how many there are, or what they are (e.g. swap an object for another, change a count, add or remove an object)",
    example: { from: 'two dogs playing in the snow', to: 'three cats playing in the snow' },
  },
  attribute: {
    key: 'attribute',
    label: 'Attribute',
    description: "an attribute of an object: its colour, material, texture, shape, size or artistic style",
    example: { from: 'a red wooden chair by the window', to: 'a blue metal chair by the window' },
  },
  spatial: {
    key: 'spatial',
    label: 'Spatial',
    description: 'the arrangement: positions and relations between objects (left/right, above/below, in front of/behind, inside/outside), pose, direction or motion',
    example: { from: 'a cat sitting to the left of a vase', to: 'a cat lying to the right of a vase' },
  },
  context: {
    key: 'context',
    label: 'Context',
    description: 'the surroundings: background, setting, weather, lighting, time of day or season',
    example: { from: 'a lighthouse on a cliff on a sunny afternoon', to: 'a lighthouse on a cliff on a foggy night' },
  },
  mix: {
    key: 'mix',
    label: 'Mix',
    description: 'whichever one of content, attribute, spatial or context fits this caption best',
    example: { from: 'a man riding a brown horse on a beach', to: 'a man riding a brown horse in a snowy forest' },
  },
};

export const DEFAULT_SYSTEM_PROMPT =
  'You edit image captions for a research dataset. Given the true caption of an image, you write one ' +
  'caption that is subtly WRONG for that image: it changes one or two visual details and keeps everything ' +
  'else, so a reader who sees the image would notice the mismatch. You answer with JSON only.';

/** Shared by every principle; {{principle}}, {{description}} and the example come from PRINCIPLE_INFO. */
const BASE_TEMPLATE = `True caption: "{{caption}}"

Rewrite it into a subtly wrong caption for the same image by changing {{description}}.
{{example}}
Rules:
- change one or two details only; keep the rest of the wording, the style and the length the same;
- the result must describe a visibly different image: never a paraphrase or a synonym swap;
- exactly one caption, plain text, at most 60 words, no explanation.
{{avoid}}
Answer with JSON only, in this form: {"caption": "<the wrong caption>", "principle": "{{principle}}"}`;

const MIX_TEMPLATE = `True caption: "{{caption}}"

Rewrite it into a subtly wrong caption for the same image. Use exactly one of these principles, whichever fits best:
- content: ${PRINCIPLE_INFO.content.description};
- attribute: ${PRINCIPLE_INFO.attribute.description};
- spatial: ${PRINCIPLE_INFO.spatial.description};
- context: ${PRINCIPLE_INFO.context.description}.
{{example}}
Rules:
- change one or two details only; keep the rest of the wording, the style and the length the same;
- the result must describe a visibly different image: never a paraphrase or a synonym swap;
- exactly one caption, plain text, at most 60 words, no explanation.
{{avoid}}
Answer with JSON only, in this form: {"caption": "<the wrong caption>", "principle": "content|attribute|spatial|context"}`;

export type PromptTemplates = Record<PrincipleChoice, string> & { system: string };

/** The default templates; copy and edit them to change what the LLM is asked. */
export function defaultTemplates(): PromptTemplates {
  const templates = { system: DEFAULT_SYSTEM_PROMPT, mix: MIX_TEMPLATE } as PromptTemplates;
  for (const p of PRINCIPLES) templates[p] = BASE_TEMPLATE;
  return templates;
}

/** Replaces {{name}} with vars[name]; unknown placeholders are left as they are. */
export function renderTemplate(template: string, vars: Record<string, string>): string {
  return template.replace(/\{\{\s*([a-z_]+)\s*\}\}/gi, (whole, name: string) => (name in vars ? vars[name] : whole));
}

export interface PromptInput {
  caption: string;
  principle: PrincipleChoice;
  /** Negatives already written for this caption: the LLM is asked for a different one. */
  avoid?: readonly string[];
  /** Why the previous answer was rejected, if it was. */
  feedback?: string;
}

/** The chat messages that ask for one mismatched caption. */
export function buildEditMessages(input: PromptInput, templates: PromptTemplates = defaultTemplates()): ChatMessage[] {
  const info = PRINCIPLE_INFO[input.principle];
  const avoid = (input.avoid ?? []).filter((a) => a.trim() !== '');
  const vars: Record<string, string> = {
    caption: input.caption,
    principle: info.key,
    label: info.label,
    description: info.description,
    example: `Example: "${info.example.from}" -> "${info.example.to}"`,
    avoid: avoid.length ? `- do not repeat these earlier edits: ${avoid.map((a) => JSON.stringify(a)).join('; ')}` : '',
  };
  const user = renderTemplate(templates[input.principle], vars).replace(/\n{3,}/g, '\n\n');
  const messages: ChatMessage[] = [
    { role: 'system', content: renderTemplate(templates.system, vars) },
    { role: 'user', content: user },
  ];
  if (input.feedback) {
    // The reason may end in its own full stop (a quoted refusal: "I can't help with that."): one is enough.
    const reason = input.feedback.trim().replace(/[.!?。]+$/, '');
    messages.push({ role: 'user', content: `Your previous answer was rejected: ${reason}. Try again, following the rules.` });
  }
  return messages;
}

/** Principle of the k-th negative of a run, cycling through the chosen list so each gets its share. */
export function principleFor(principles: readonly PrincipleChoice[], k: number): PrincipleChoice {
  if (principles.length === 0) throw new Error('no principles chosen');
  return principles[((k % principles.length) + principles.length) % principles.length];
}

export function isKnownPrinciple(x: string): x is Principle {
  return (PRINCIPLES as readonly string[]).includes(x);
}
