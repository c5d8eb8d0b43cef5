// Seeded randomness and hashing, one of each: mulberry32 seeded by FNV-1a. The rule editor, the principle
// mix, the shapes world and the trainer's draws (src/tpo/random.ts) all use them, so a seed means the same
// everywhere.

/** mulberry32: a small, fast 32-bit generator; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a (32-bit) of a string's UTF-16 code units, from `basis` (FNV's offset basis unless given). */
export function fnv1a(text: string, basis = 0x811c9dc5): number {
  let h = basis;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** FNV-1a hash of the parts (joined with a separator that cannot occur in text), as an unsigned 32-bit int. */
export function hashSeed(...parts: (string | number)[]): number {
  return fnv1a(parts.map(String).join('\u0000'));
}

/** A generator seeded by a user seed and any context (caption, principle, index). */
export function seededRandom(seed: number | string, ...context: (string | number)[]): () => number {
  return mulberry32(hashSeed(seed, ...context));
}

export function pick<T>(rand: () => number, items: readonly T[]): T {
  if (items.length === 0) throw new Error('pick from an empty list');
  return items[Math.floor(rand() * items.length)];
}
