// Pulls the caption out of whatever an LLM answered: clean JSON, JSON inside a code fence or prose, or
// prose alone ("Here is the edited caption: ..."). Everything that comes back is plain text.

export interface ExtractedAnswer {
  /** Candidate captions found (validation wants exactly one). */
  captions: string[];
  /** The principle the model says it used, if it said. */
  principle?: string;
  /** The answer was a refusal rather than a caption (structured refusal field, or JSON saying so). */
  refusal?: string;
  /** Whether the captions came from JSON. */
  fromJson: boolean;
}

const CAPTION_KEYS = ['caption', 'negative', 'negative_caption', 'edited_caption', 'mismatched_caption', 'wrong_caption', 'new_caption', 'modified_caption', 'edited', 'output', 'result', 'text'];
const LIST_KEYS = ['captions', 'negatives', 'negative_captions', 'edited_captions', 'results'];

/** Control characters (except none: newlines too become spaces later) and zero-width marks removed. */
export function plainText(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b-\u200d\u2060\ufeff]/g, '');
}

/** Removes quotes, markdown emphasis, bullets and numbering around one caption line. */
export function tidyCaption(s: string): string {
  let t = plainText(s).replace(/\s+/g, ' ').trim();
  t = t.replace(/^(?:[-*•]\s+|\d+[.)]\s+)/, '');
  for (let i = 0; i < 3; i++) {
    const before = t;
    t = t.replace(/^\*\*(.*)\*\*$/, '$1').replace(/^__(.*)__$/, '$1').replace(/^`(.*)`$/, '$1').trim();
    t = t.replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1').replace(/^“(.*)”$/, '$1').replace(/^‘(.*)’$/, '$1').trim();
    if (t === before) break;
  }
  return t;
}

function fromJsonValue(value: unknown): Omit<ExtractedAnswer, 'fromJson'> | null {
  if (typeof value === 'string') return { captions: [value] };
  if (Array.isArray(value)) {
    const captions: string[] = [];
    for (const v of value) {
      const inner = fromJsonValue(v);
      if (inner) captions.push(...inner.captions);
    }
    return captions.length ? { captions } : null;
  }
  if (value === null || typeof value !== 'object') return null;
  const obj = value as Record<string, unknown>;
  const lower = new Map(Object.entries(obj).map(([k, v]) => [k.toLowerCase(), v]));
  const principle = typeof lower.get('principle') === 'string' ? (lower.get('principle') as string) : undefined;
  const refusal = lower.get('refusal') ?? lower.get('error');
  for (const key of CAPTION_KEYS) {
    const v = lower.get(key);
    if (typeof v === 'string') return { captions: [v], principle };
    if (Array.isArray(v)) {
      const inner = fromJsonValue(v);
      if (inner) return { captions: inner.captions, principle };
    }
  }
  for (const key of LIST_KEYS) {
    const v = lower.get(key);
    if (Array.isArray(v)) {
      const inner = fromJsonValue(v);
      if (inner) return { captions: inner.captions, principle };
    }
  }
  if (typeof refusal === 'string' && refusal.trim()) return { captions: [], refusal, principle };
  return null;
}

/** JSON texts worth trying, most likely first: the whole answer, fenced blocks, the outermost {...}. */
function jsonCandidates(text: string): string[] {
  const out: string[] = [text.trim()];
  for (const m of text.matchAll(/```[a-zA-Z]*\s*\n?([\s\S]*?)```/g)) out.push(m[1].trim());
  const first = text.indexOf('{');
  const last = text.lastIndexOf('}');
  if (first >= 0 && last > first) out.push(text.slice(first, last + 1));
  const firstBracket = text.indexOf('[');
  const lastBracket = text.lastIndexOf(']');
  if (firstBracket >= 0 && lastBracket > firstBracket) out.push(text.slice(firstBracket, lastBracket + 1));
  return out;
}

const LABEL_LINE = /^\s*(?:[-*]\s*)?(?:\*\*)?\s*(?:(?:negative|edited|new|modified|mismatched|wrong|altered|rewritten|changed|output)\s+)?caption\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*(.+)$/i;
/** "Here is the edited caption: ...", "Sure! The new caption is: ..." on one line. */
const LEAD_IN_INLINE = /^\s*(?:sure|okay|ok|certainly|here(?:'s| is| are)|the (?:new|edited|wrong|negative|modified) caption(?: is)?)\b[^:：]*[:：]\s*(.+)$/i;
const PRINCIPLE_LINE = /^\s*(?:\*\*)?\s*principle\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*([a-z]+)/i;
/** Lines that are commentary, not a caption. */
const COMMENTARY = /^\s*(?:\*\*)?\s*(?:note|notes|explanation|reason|change|changes|changed|i changed|i replaced|i swapped|this (?:changes|edit|caption)|the (?:change|edit)|principle)\b/i;

/**
 * The JSON objects and arrays that follow one another in `text` (separated by nothing, spaces, commas or
 * prose), each parsed; a piece that does not parse ends the scan.
 */
function jsonSequence(text: string): unknown[] {
  const out: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  let escaped = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (ch === '\\') escaped = true;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"' && depth > 0) inString = true;
    else if (ch === '{' || ch === '[') {
      if (depth === 0) start = i;
      depth++;
    } else if ((ch === '}' || ch === ']') && depth > 0) {
      depth--;
      if (depth === 0) {
        try {
          out.push(JSON.parse(text.slice(start, i + 1)));
        } catch {
          return out;
        }
      }
    }
  }
  return out;
}

/** Extracts the caption candidates from an LLM answer. */
export function extractCaption(answer: string): ExtractedAnswer {
  const text = plainText(answer ?? '').trim();
  if (text === '') return { captions: [], fromJson: false };

  for (const candidate of jsonCandidates(text)) {
    if (!/^[[{"]/.test(candidate)) continue;
    try {
      const found = fromJsonValue(JSON.parse(candidate));
      if (found) return { ...found, captions: found.captions.map(tidyCaption).filter((c) => c !== ''), fromJson: true };
    } catch {
      // not JSON: try the next candidate
    }
  }

  // Several JSON values one after another ({"caption": ...}{"caption": ...}): each one's captions count,
  // so the answer is refused as holding more than one instead of its first caption being taken.
  const values = jsonSequence(text);
  if (values.length > 1) {
    const found = values.map(fromJsonValue).filter((v): v is NonNullable<typeof v> => v !== null);
    const captions = found.flatMap((f) => f.captions).map(tidyCaption).filter((c) => c !== '');
    if (captions.length) return { captions, principle: found.find((f) => f.principle)?.principle, fromJson: true };
  }

  // Broken JSON (cut off, trailing comma, single quotes...): take the caption field's string if there is one.
  const field = /["']?(?:caption|negative_caption|edited_caption|negative)["']?\s*:\s*"((?:[^"\\\n]|\\.)*)"/i.exec(text);
  if (field) {
    let caption = field[1];
    try {
      caption = JSON.parse(`"${field[1]}"`) as string;
    } catch {
      // keep the raw text
    }
    const principle = /["']?principle["']?\s*:\s*["']([a-z]+)/i.exec(text)?.[1]?.toLowerCase();
    return { captions: [tidyCaption(caption)].filter((c) => c !== ''), principle, fromJson: true };
  }

  // Prose: drop code-fence markers, then look for a labelled line, else the lines that are not commentary.
  const lines = text
    .replace(/```[a-zA-Z]*/g, '\n')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '');
  let principle: string | undefined;
  for (const l of lines) {
    const m = PRINCIPLE_LINE.exec(l);
    if (m) principle = m[1].toLowerCase();
  }
  const labelled = lines.map((l) => LABEL_LINE.exec(l)?.[1] ?? LEAD_IN_INLINE.exec(l)?.[1]).filter((c): c is string => c !== undefined);
  if (labelled.length) return { captions: labelled.map(tidyCaption).filter((c) => c !== ''), principle, fromJson: false };
  const captions = lines
    .filter((l) => !COMMENTARY.test(l))
    .filter((l) => !/^[{}[\]]/.test(l)) // pieces of JSON that did not parse are not captions
    .filter((l) => !/[:：]\s*(?:\*\*)?$/.test(l)) // lead-ins such as "Here is the edited caption:"
    .map(tidyCaption)
    .filter((c) => c !== '');
  return { captions, principle, fromJson: false };
}
