import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';
import {
  f16ToF32,
  f32ToF16,
  fromFloat32,
  memorySource,
  SafetensorsFile,
  toFloat32,
  writeSafetensors,
  type TensorToWrite,
} from '../../src/models/safetensors';
import { openSafetensorsFile } from '../../src/models/safetensors-node';

import { GOLDENS } from '../helpers/goldens';

function f32Tensor(name: string, shape: number[], values: number[]): TensorToWrite {
  return { name, dtype: 'F32', shape, data: fromFloat32(Float32Array.from(values), 'F32') };
}

/** A file assembled by hand: header JSON text (not padded) followed by `data`. */
function rawFile(header: string, data: Uint8Array = new Uint8Array(0), lengthOverride?: number): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setUint32(0, lengthOverride ?? json.length, true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const open = (bytes: Uint8Array) => SafetensorsFile.open(memorySource(bytes, 'test.safetensors'));

describe('safetensors writing and reading', () => {
  it('round-trips F32, F16 and BF16 tensors with metadata, in the reference writer layout', async () => {
    const values = [0, 1, -2.5, 65504, 1e-5, 3.14159];
    const bytes = writeSafetensors(
      [
        { name: 'b.half', dtype: 'F16', shape: [2, 3], data: fromFloat32(Float32Array.from(values), 'F16') },
        { name: 'a.brain', dtype: 'BF16', shape: [6], data: fromFloat32(Float32Array.from(values), 'BF16') },
        f32Tensor('z.single', [3, 2], values),
        f32Tensor('a.single', [0], []),
      ],
      { format: 'pt', note: 'x' },
    );
    const n = new DataView(bytes.buffer).getUint32(0, true);
    expect(n % 8).toBe(0); // header padded to 8 bytes
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    // __metadata__ first, then by dtype (F32 before BF16 before F16), then by name.
    expect(Object.keys(header)).toEqual(['__metadata__', 'a.single', 'z.single', 'a.brain', 'b.half']);
    const file = await open(bytes);
    expect(file.metadata).toEqual({ format: 'pt', note: 'x' });
    expect(Array.from(await file.readF32('z.single'))).toEqual(Array.from(Float32Array.from(values)));
    expect(Array.from(await file.readF32('b.half'))).toEqual([0, 1, -2.5, 65504, f16ToF32(f32ToF16(1e-5)), 3.140625]);
    const bf = await file.readF32('a.brain');
    values.forEach((v, i) => expect(Math.abs(bf[i] - v)).toBeLessThanOrEqual(Math.abs(v) / 128));
    expect(file.info('a.single').shape).toEqual([0]);
  });

  it('converts every float16 value exactly and rounds float32 to nearest even', () => {
    for (let h = 0; h < 0x10000; h++) {
      const f = f16ToF32(h);
      if (Number.isNaN(f)) expect(Number.isNaN(f16ToF32(f32ToF16(f)))).toBe(true);
      else expect(f32ToF16(f)).toBe(h);
    }
    expect(f32ToF16(1 + 2 ** -11)).toBe(f32ToF16(1)); // tie to even (down)
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(f32ToF16(1 + 2 ** -9)); // tie to even (up)
    expect(f16ToF32(f32ToF16(1e6))).toBe(Infinity);
    expect(f16ToF32(f32ToF16(2 ** -24))).toBe(2 ** -24); // smallest subnormal
    expect(Array.from(toFloat32(fromFloat32(Float32Array.from([1.00390625]), 'BF16'), 'BF16'))).toEqual([1]); // tie to even
  });

  it('refuses to write duplicate names or wrongly sized data', () => {
    expect(() => writeSafetensors([f32Tensor('a', [1], [1]), f32Tensor('a', [1], [2])])).toThrow(/given twice/);
    expect(() => writeSafetensors([{ ...f32Tensor('a', [2], [1, 2]), shape: [3] }])).toThrow(/needs 12/);
  });

  it('reads the golden model files from disk slice by slice', async () => {
    const { file, close } = await openSafetensorsFile(join(GOLDENS, 'tiny-sd15/unet/diffusion_pytorch_model.safetensors'));
    try {
      expect(file.names.length).toBeGreaterThan(100);
      const name = file.names.find((k) => k.endsWith('conv_in.weight'))!;
      const info = file.info(name);
      const data = await file.readF32(name);
      expect(data.length).toBe(info.shape.reduce((a, b) => a * b, 1));
      expect(data.some((v) => v !== 0)).toBe(true);
    } finally {
      await close();
    }
  });

  it('names the file when it does not exist', async () => {
    await expect(openSafetensorsFile('/nonexistent/model.safetensors')).rejects.toThrow(/model.safetensors: no such file/);
  });
});

describe('safetensors validation: each rule has a clear error', () => {
  const four = new Uint8Array(4);
  const eight = new Uint8Array(8);
  const entry = (dtype: string, shape: unknown, offsets: unknown) => JSON.stringify({ dtype, shape, data_offsets: offsets });
  const cases: [string, Uint8Array, RegExp][] = [
    ['a file shorter than the length prefix', new Uint8Array(5), /too short/],
    ['a header length past the end of the file (truncated)', rawFile('{}', new Uint8Array(0), 1000), /runs past the end.*truncated/],
    ['an absurd header length', rawFile('{}', new Uint8Array(0), 0xffffffff), /exceeds the 100000000-byte limit/],
    ['a header that is not JSON', rawFile('{"a": {'), /not valid JSON/],
    ['a header that is not an object', rawFile('[1, 2]  '), /must be a JSON object/],
    ['a header that is not UTF-8', rawFile('{"\u00ff": 1}').map((b, i) => (i === 11 ? 0xff : b)), /not valid UTF-8/],
    ['a duplicated tensor name', rawFile(`{"w": ${entry('F32', [1], [0, 4])}, "w": ${entry('F32', [1], [4, 8])}}`, eight), /tensor "w": appears twice/],
    ['an unknown dtype', rawFile(`{"w": ${entry('F12', [1], [0, 4])}}`, four), /tensor "w": unsupported dtype "F12"/],
    ['a bad shape', rawFile(`{"w": ${entry('F32', [-1], [0, 4])}}`, four), /tensor "w": shape \[-1\] is not a list/],
    ['bad offsets', rawFile(`{"w": ${entry('F32', [1], [4, 0])}}`, four), /tensor "w": data_offsets \[4,0\]/],
    ['a size that does not match dtype x shape', rawFile(`{"w": ${entry('F32', [2], [0, 4])}}`, four), /holds 4 bytes, but F32 \[2\] needs 8/],
    ['data past the end of the file (truncated)', rawFile(`{"w": ${entry('F32', [2], [0, 8])}}`, four), /tensor "w": data ends.*truncated/],
    ['a gap between tensors', rawFile(`{"a": ${entry('F32', [1], [0, 4])}, "b": ${entry('F32', [1], [8, 12])}}`, new Uint8Array(12)), /tensor "b": leaves a gap of 4 bytes/],
    ['overlapping tensors', rawFile(`{"a": ${entry('F32', [2], [0, 8])}, "b": ${entry('F32', [1], [4, 8])}}`, eight), /overlaps/],
    ['bytes after the last tensor', rawFile(`{"a": ${entry('F32', [1], [0, 4])}}`, eight), /4 bytes follow the last tensor/],
    ['metadata that is not strings', rawFile(`{"__metadata__": {"steps": 10}}`), /__metadata__ must map names to strings/],
  ];
  for (const [what, bytes, message] of cases) {
    it(what, async () => {
      await expect(open(bytes)).rejects.toThrow(message);
      await expect(open(bytes)).rejects.toThrow(/^test\.safetensors: /);
    });
  }

  it('reports a truncated real file, from disk, by name', async () => {
    const bytes = writeSafetensors([f32Tensor('unet.w', [4, 4], Array.from({ length: 16 }, (_, i) => i))]);
    const path = join(mkdtempSync(join(tmpdir(), 'st-')), 'cut.safetensors');
    writeFileSync(path, bytes.subarray(0, bytes.length - 10));
    await expect(openSafetensorsFile(path)).rejects.toThrow(/^cut\.safetensors: tensor "unet\.w": data ends .* truncated/);
  });
});
