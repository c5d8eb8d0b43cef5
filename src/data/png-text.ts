// Text chunks in PNG files: the generation parameters written beside a sampled image, as Automatic1111
// writes its "parameters" chunk, so the image says how to make it again. Platform-free: the CLI encodes the
// pixels with pngjs, the browser with a canvas, and both add the chunks here.

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

let crcTable: Uint32Array | null = null;

/** CRC-32 (ISO-HDLC, the PNG and zlib polynomial) of a chunk's type and data. */
export function crc32(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (const b of bytes) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

interface Chunk {
  type: string;
  /** Offset of the chunk's length field, and its whole size (length + type + data + CRC). */
  start: number;
  size: number;
  data: Uint8Array;
}

function chunks(png: Uint8Array): Chunk[] {
  if (!isPng(png)) throw new Error('not a PNG file (its signature is missing)');
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const out: Chunk[] = [];
  for (let at = 8; at + 12 <= png.length; ) {
    const length = view.getUint32(at);
    if (at + 12 + length > png.length) throw new Error(`PNG chunk at byte ${at} runs past the end of the file`);
    const type = String.fromCharCode(...png.subarray(at + 4, at + 8));
    out.push({ type, start: at, size: 12 + length, data: png.subarray(at + 8, at + 8 + length) });
    at += 12 + length;
    if (type === 'IEND') break;
  }
  return out;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

const latin1 = (s: string) => /^[\u0001-\u00ff]*$/.test(s);

/**
 * The text chunk for one entry: tEXt when the value is Latin-1 (what readers expect for "parameters"),
 * else an uncompressed iTXt holding UTF-8.
 */
function textChunk(key: string, value: string): Uint8Array {
  if (!/^[\u0020-\u007e\u00a1-\u00ff]{1,79}$/.test(key)) throw new Error(`PNG text key ${JSON.stringify(key)} must be 1 to 79 Latin-1 characters`);
  const keyBytes = Uint8Array.from(key, (ch) => ch.charCodeAt(0));
  if (latin1(value)) {
    const data = new Uint8Array(keyBytes.length + 1 + value.length);
    data.set(keyBytes);
    for (let i = 0; i < value.length; i++) data[keyBytes.length + 1 + i] = value.charCodeAt(i);
    return chunk('tEXt', data);
  }
  const text = new TextEncoder().encode(value);
  // keyword, 0, compression flag 0, method 0, empty language tag, 0, empty translated keyword, 0, text
  const data = new Uint8Array(keyBytes.length + 5 + text.length);
  data.set(keyBytes);
  data.set(text, keyBytes.length + 5);
  return chunk('iTXt', data);
}

/** The PNG with text chunks added right after IHDR (before the image data, where readers look first). */
export function addPngText(png: Uint8Array, entries: Record<string, string>): Uint8Array {
  const list = chunks(png);
  if (list[0]?.type !== 'IHDR') throw new Error('not a PNG file (IHDR is not its first chunk)');
  const insertAt = list[0].start + list[0].size;
  const added = Object.entries(entries).map(([k, v]) => textChunk(k, v));
  const extra = added.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(png.length + extra);
  out.set(png.subarray(0, insertAt));
  let at = insertAt;
  for (const c of added) {
    out.set(c, at);
    at += c.length;
  }
  out.set(png.subarray(insertAt), at);
  return out;
}

/** The tEXt and uncompressed iTXt entries of a PNG (compressed ones are skipped). */
export function readPngText(png: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of chunks(png)) {
    if (c.type !== 'tEXt' && c.type !== 'iTXt') continue;
    const zero = c.data.indexOf(0);
    if (zero < 0) continue;
    const key = String.fromCharCode(...c.data.subarray(0, zero));
    if (c.type === 'tEXt') {
      out[key] = Array.from(c.data.subarray(zero + 1), (b) => String.fromCharCode(b)).join('');
      continue;
    }
    if (c.data[zero + 1] !== 0) continue;
    // Skip the language tag and translated keyword (each ends in a zero byte).
    let at = zero + 3;
    for (let skip = 0; skip < 2; skip++) at = c.data.indexOf(0, at) + 1;
    if (at <= 0) continue;
    out[key] = new TextDecoder().decode(c.data.subarray(at));
  }
  return out;
}
