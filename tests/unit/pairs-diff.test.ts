import { describe, expect, it } from 'vitest';
import { changedWords } from '../../src/ui/pairs/diff';

describe('changedWords', () => {
  it('marks the words of the negative that the caption does not have', () => {
    const parts = changedWords('a red circle on the left of a white background', 'a blue circle on the right of a white background.');
    expect(parts.filter((p) => p.changed).map((p) => p.text)).toEqual(['blue', 'right']);
    expect(parts.map((p) => p.text).join('')).toBe('a blue circle on the right of a white background.');
  });

  it('ignores case and punctuation around words', () => {
    expect(changedWords('A Dog, running.', 'a dog running').some((p) => p.changed)).toBe(false);
  });
});
