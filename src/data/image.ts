// Recognising image files by their first bytes, not their names.

export type ImageKind = 'png' | 'jpeg' | 'webp' | 'gif' | 'bmp';

/** How many leading bytes sniffImage needs. */
export const IMAGE_SNIFF_BYTES = 32;

export const IMAGE_EXTENSIONS = ['png', 'jpg', 'jpeg', 'jfif', 'webp', 'gif', 'bmp'];

export function hasImageExtension(path: string): boolean {
  const m = /\.([^./\\]+)$/.exec(path);
  return !!m && IMAGE_EXTENSIONS.includes(m[1].toLowerCase());
}

const starts = (b: Uint8Array, sig: number[], at = 0) => b.length >= at + sig.length && sig.every((x, i) => b[at + i] === x);

/** The image format of these leading bytes (PNG, JPEG, WebP, GIF, BMP), or null when they are none of them. */
export function sniffImage(bytes: Uint8Array): ImageKind | null {
  if (starts(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (starts(bytes, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (starts(bytes, [0x52, 0x49, 0x46, 0x46]) && starts(bytes, [0x57, 0x45, 0x42, 0x50], 8)) return 'webp'; // RIFF....WEBP
  if (starts(bytes, [0x47, 0x49, 0x46, 0x38]) && (bytes[4] === 0x37 || bytes[4] === 0x39) && bytes[5] === 0x61) return 'gif'; // GIF87a / GIF89a
  if (starts(bytes, [0x42, 0x4d]) && bytes.length >= 18) {
    // "BM", file size, two reserved zero words, pixel offset, then a DIB header of a known size.
    const reservedZero = bytes[6] === 0 && bytes[7] === 0 && bytes[8] === 0 && bytes[9] === 0;
    const dib = bytes[14] | (bytes[15] << 8) | (bytes[16] << 16) | (bytes[17] << 24);
    if (reservedZero && [12, 16, 40, 52, 56, 64, 108, 124].includes(dib)) return 'bmp';
  }
  return null;
}
