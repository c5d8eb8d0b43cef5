// safetensors reading and writing (https://github.com/huggingface/safetensors format):
//   8 bytes: N, the header length (u64 little-endian)
//   N bytes: a JSON object {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}
//   the rest: the tensors' bytes, offsets relative to the end of the header.
// Model files are several GB, so a file is opened by reading its header alone, and each tensor is read as
// its own slice when needed, from a browser File/Blob or a file on disk (ByteSource). Every rule of the
// format is checked on open, and a violation names the file, the tensor and the problem.

import { f16ToF32, f32ToF16 } from '../nn/half';

export type Dtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<Dtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** The order of the reference implementation's Dtype enum; its writer sorts tensors by it, largest first. */
const DTYPE_RANK: Record<Dtype, number> = { BOOL: 0, U8: 1, I8: 2, I16: 3, F16: 4, BF16: 5, I32: 6, F32: 7, F64: 8, I64: 9 };

/** The reference implementation refuses headers above 100 MB; so do we, before allocating anything. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Byte range in the file (absolute, header included). */
  begin: number;
  end: number;
}

/** Random access to bytes: a browser Blob, a file on disk, or memory. */
export interface ByteSource {
  name: string;
  size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Releases what reading needed (a file handle on disk); absent where nothing needs it. */
  close?(): Promise<void>;
}

export class SafetensorsError extends Error {
  constructor(
    readonly file: string,
    problem: string,
    readonly tensor?: string,
  ) {
    super(`${file}: ${tensor ? `tensor "${tensor}": ` : ''}${problem}`);
    this.name = 'SafetensorsError';
  }
}

export function blobSource(blob: Blob, name = (blob as File).name ?? 'blob'): ByteSource {
  return {
    name,
    size: blob.size,
    read: async (offset, length) => new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer()),
  };
}

export function memorySource(bytes: Uint8Array, name = 'memory'): ByteSource {
  return { name, size: bytes.length, read: async (offset, length) => bytes.subarray(offset, offset + length) };
}

/** Finds a repeated key among the top-level keys of a JSON object text (JSON.parse keeps only the last). */
function duplicateTopLevelKey(json: string): string | null {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (ch === '"') {
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(json.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (ch === '{' || ch === '[') {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (ch === '}' || ch === ']') {
      depth--;
    } else if (ch === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return null;
}

function isNonNegativeInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Validates a parsed header against the file size; returns the tensors in file order. */
function parseHeader(file: string, headerText: string, headerLength: number, fileSize: number) {
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (e) {
    throw new SafetensorsError(file, `the header is not valid JSON (${(e as Error).message}); the file is corrupt`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new SafetensorsError(file, 'the header must be a JSON object of tensors');
  }
  const duplicate = duplicateTopLevelKey(headerText);
  if (duplicate !== null) throw new SafetensorsError(file, 'appears twice in the header', duplicate);

  const dataStart = 8 + headerLength;
  const dataLength = fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry) || Object.values(entry).some((v) => typeof v !== 'string')) {
        throw new SafetensorsError(file, '__metadata__ must map names to strings');
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    if (typeof entry !== 'object' || entry === null) throw new SafetensorsError(file, 'entry is not an object', name);
    const { dtype, shape, data_offsets: offsets } = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
      throw new SafetensorsError(file, `unsupported dtype ${JSON.stringify(dtype)} (expected one of ${Object.keys(DTYPE_BYTES).join(', ')})`, name);
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
      throw new SafetensorsError(file, `shape ${JSON.stringify(shape)} is not a list of non-negative integers`, name);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger) || offsets[1] < offsets[0]) {
      throw new SafetensorsError(file, `data_offsets ${JSON.stringify(offsets)} is not a [begin, end] pair with begin <= end`, name);
    }
    const expected = shape.reduce((a: number, b: number) => a * b, 1) * DTYPE_BYTES[dtype as Dtype];
    if (offsets[1] - offsets[0] !== expected) {
      throw new SafetensorsError(
        file,
        `holds ${offsets[1] - offsets[0]} bytes, but ${dtype} [${shape.join(', ')}] needs ${expected}`,
        name,
      );
    }
    if (offsets[1] > dataLength) {
      throw new SafetensorsError(
        file,
        `data ends at byte ${offsets[1]} of the data section, past its end (${dataLength} bytes): the file is truncated`,
        name,
      );
    }
    tensors.push({ name, dtype: dtype as Dtype, shape, begin: dataStart + offsets[0], end: dataStart + offsets[1] });
  }
  // The data section is exactly the tensors, back to back, in some order: no gaps, no overlaps, no tail.
  const byOffset = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = dataStart;
  for (const t of byOffset) {
    if (t.begin < cursor) throw new SafetensorsError(file, 'overlaps the previous tensor', t.name);
    if (t.begin > cursor) throw new SafetensorsError(file, `leaves a gap of ${t.begin - cursor} bytes before it`, t.name);
    cursor = t.end;
  }
  if (cursor !== fileSize) {
    throw new SafetensorsError(file, `${fileSize - cursor} bytes follow the last tensor; the file is not a valid safetensors file`);
  }
  return { tensors: byOffset, metadata };
}

export class SafetensorsFile {
  readonly tensors: ReadonlyMap<string, TensorInfo>;

  private constructor(
    readonly source: ByteSource,
    tensors: TensorInfo[],
    readonly metadata: Readonly<Record<string, string>>,
  ) {
    this.tensors = new Map(tensors.map((t) => [t.name, t]));
  }

  /** Reads and validates the header only. */
  static async open(source: ByteSource): Promise<SafetensorsFile> {
    const file = source.name;
    if (source.size < 8) throw new SafetensorsError(file, `is ${source.size} bytes long, too short to be a safetensors file`);
    const lengthBytes = await source.read(0, 8);
    const view = new DataView(lengthBytes.buffer, lengthBytes.byteOffset, 8);
    const n = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
    if (n < 2) throw new SafetensorsError(file, `header length ${n} is too small; the file is corrupt`);
    if (n > MAX_HEADER_BYTES) {
      throw new SafetensorsError(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit; this is not a safetensors file or it is corrupt`);
    }
    if (8 + n > source.size) {
      throw new SafetensorsError(file, `header of ${n} bytes runs past the end of the ${source.size}-byte file: the file is truncated`);
    }
    const headerBytes = await source.read(8, n);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    } catch {
      throw new SafetensorsError(file, 'the header is not valid UTF-8; the file is corrupt');
    }
    if (!text.trimStart().startsWith('{')) throw new SafetensorsError(file, 'the header must be a JSON object of tensors');
    const { tensors, metadata } = parseHeader(file, text, n, source.size);
    return new SafetensorsFile(source, tensors, metadata);
  }

  get names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError(this.source.name, 'is not in the file', name);
    return t;
  }

  /** The tensor's raw little-endian bytes. */
  async readBytes(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    const bytes = await this.source.read(t.begin, t.end - t.begin);
    if (bytes.length !== t.end - t.begin) {
      throw new SafetensorsError(this.source.name, `read ${bytes.length} of ${t.end - t.begin} bytes: the file changed or is unreadable`, name);
    }
    return bytes;
  }

  /** The tensor as float64: exact for F64 (reference values), converted from any other dtype. */
  async readF64(name: string): Promise<Float64Array> {
    const t = this.info(name);
    const bytes = await this.readBytes(name);
    if (t.dtype !== 'F64') return Float64Array.from(toFloat32(bytes, t.dtype));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return Float64Array.from({ length: bytes.byteLength / 8 }, (_, i) => view.getFloat64(8 * i, true));
  }

  /** The tensor as float32, converted from F16, BF16, F64 or an integer dtype. */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    return toFloat32(await this.readBytes(name), t.dtype);
  }
}

// ---- dtype conversion ----

// The half-precision conversions live with the engine (nn/half.ts); re-exported for file code.
export { f16ToF32, f32ToF16 };

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);


export function toFloat32(bytes: Uint8Array, dtype: Dtype): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const out = new Float32Array(n);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = f16ToF32(view.getUint16(2 * i, true));
      break;
    case 'BF16':
      for (let i = 0; i < n; i++) {
        u32Scratch[0] = view.getUint16(2 * i, true) << 16;
        out[i] = f32Scratch[0];
      }
      break;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(8 * i, true);
      break;
    case 'I64':
      for (let i = 0; i < n; i++) out[i] = Number(view.getBigInt64(8 * i, true));
      break;
    case 'I32':
      for (let i = 0; i < n; i++) out[i] = view.getInt32(4 * i, true);
      break;
    case 'I16':
      for (let i = 0; i < n; i++) out[i] = view.getInt16(2 * i, true);
      break;
    case 'I8':
      for (let i = 0; i < n; i++) out[i] = view.getInt8(i);
      break;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = bytes[i];
      break;
  }
  return out;
}

/** float32 values as the little-endian bytes of `dtype` (F32, F16 or BF16; BF16 rounds to nearest even). */
export function fromFloat32(values: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  const out = new Uint8Array(values.length * DTYPE_BYTES[dtype]);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) {
    if (dtype === 'F32') view.setFloat32(4 * i, values[i], true);
    else if (dtype === 'F16') view.setUint16(2 * i, f32ToF16(values[i]), true);
    else {
      f32Scratch[0] = values[i];
      const x = u32Scratch[0];
      const isNan = (x & 0x7fffffff) > 0x7f800000;
      const rounded = isNan ? (x >>> 16) | 0x40 : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
      view.setUint16(2 * i, rounded & 0xffff, true);
    }
  }
  return out;
}

// ---- writing ----

export interface TensorToWrite {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Little-endian bytes, exactly dtype size x shape. */
  data: Uint8Array;
}

/**
 * Serialises tensors as the reference writer does: tensors ordered by dtype (largest first, which keeps
 * every tensor aligned to its element size) then name, compact JSON with __metadata__ first, header
 * padded with spaces to a multiple of 8 bytes.
 */
export function writeSafetensors(tensors: TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  const names = new Set<string>();
  for (const t of tensors) {
    if (t.name === '__metadata__') throw new Error('writeSafetensors: "__metadata__" is not a tensor name');
    if (names.has(t.name)) throw new Error(`writeSafetensors: tensor "${t.name}" given twice`);
    names.add(t.name);
    const expected = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== expected) {
      throw new Error(`writeSafetensors: tensor "${t.name}" has ${t.data.byteLength} bytes, ${t.dtype} [${t.shape}] needs ${expected}`);
    }
  }
  const ordered = [...tensors].sort((a, b) => DTYPE_RANK[b.dtype] - DTYPE_RANK[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of ordered) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, json.length, true);
  view.setUint32(4, 0, true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const t of ordered) {
    out.set(t.data, at);
    at += t.data.byteLength;
  }
  return out;
}
