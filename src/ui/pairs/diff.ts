// A small word diff for the review list: which words of a negative are not in its caption, so the eye goes
// straight to what the editor changed. Words compare without case and surrounding punctuation.

export interface DiffPart {
  text: string;
  /** A word the caption does not have. */
  changed: boolean;
}

const normal = (word: string) => word.toLowerCase().replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, '');

/** The negative cut into words and spaces, each word marked when the caption lacks it. */
export function changedWords(caption: string, negative: string): DiffPart[] {
  const known = new Set(caption.split(/\s+/).map(normal).filter(Boolean));
  return negative
    .split(/(\s+)/)
    .filter((t) => t !== '')
    .map((text) => ({ text, changed: !/^\s+$/.test(text) && normal(text) !== '' && !known.has(normal(text)) }));
}
