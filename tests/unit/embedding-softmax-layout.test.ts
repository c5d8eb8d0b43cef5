import { describe, expect, it } from 'vitest';
import { embedding, embeddingBackward, groupPositionsById, IdTensor } from '../../src/nn/ops/embedding';
import { channelsToTokens, tokensToChannels, transpose, transposeBackward } from '../../src/nn/ops/layout';
import { softmax, softmaxBackward } from '../../src/nn/ops/softmax';
import { Tensor } from '../../src/nn/tensor';
import { expectClose, expectGradient, randn, rng } from '../helpers/check';
import { testGpu } from '../helpers/gpu';
import * as ref from '../helpers/reference/embedding';

const FWD_TOL = 1e-6;

describe('embedding', () => {
  const cases = [
    { batch: 1, n: 7, vocab: 5, dim: 3 },
    { batch: 3, n: 77, vocab: 301, dim: 37 }, // CLIP-like rows of 77 ids, some repeated
    { batch: 2, n: 19, vocab: 4, dim: 260 }, // few rows, many repeats, a row wider than the workgroup
  ];
  for (const { batch, n, vocab, dim } of cases) {
    it(`[${batch}, ${n}] ids into a ${vocab} x ${dim} table: gather and scatter-add`, async () => {
      const gpu = await testGpu();
      const r = rng(vocab);
      const ids = Array.from({ length: batch * n }, () => Math.floor(r() * vocab));
      ids[0] = ids[ids.length - 1]; // at least one repeat
      const table = randn(vocab * dim, 1);
      const dy = randn(batch * n * dim, 2);
      const idt = IdTensor.from(gpu, ids, [batch, n], vocab);
      const tt = Tensor.from(gpu, table, [vocab, dim]);
      const out = await gpu.checked(() => embedding(tt, idt));
      expect(out.shape).toEqual([batch, n, dim]);
      expectClose(await out.read(), ref.embedding(table, ids, dim), 0, 'embedding forward (exact)');
      const dt = embeddingBackward(idt, Tensor.from(gpu, dy, out.shape), tt.shape);
      expect(dt.shape).toEqual([vocab, dim]);
      const f = ([t]: Float64Array[]) => ref.embedding(t, ids, dim);
      expectGradient(await dt.read(), f, [table], 0, dy, 'embedding dtable');
      // Every row, not only the sampled ones: rows no id picked are exactly zero.
      const dtv = await dt.read();
      const used = new Set(ids);
      for (let v = 0; v < vocab; v++) {
        if (!used.has(v)) expect(dtv.subarray(v * dim, (v + 1) * dim).every((x) => x === 0), `row ${v}`).toBe(true);
      }
      for (const t of [out, dt, tt]) t.release();
      idt.release();
    });
  }

  it('groups positions by id, ascending', () => {
    const { distinct, meta } = groupPositionsById(Uint32Array.from([4, 1, 4, 0, 1, 4]));
    expect(distinct).toBe(3);
    expect([...meta]).toEqual([0, 1, 4, /* offsets */ 0, 1, 3, 6, /* positions */ 3, 1, 4, 0, 2, 5]);
  });

  it('refuses ids outside the table', async () => {
    const gpu = await testGpu();
    expect(() => IdTensor.from(gpu, [0, 5], [2], 5)).toThrow(/not in \[0, 5\)/);
    expect(() => IdTensor.from(gpu, [0, 1.5], [2])).toThrow(/1.5/);
    const ids = IdTensor.from(gpu, [0, 9], [2]);
    expect(() => embedding(Tensor.zeros(gpu, [5, 2]), ids)).toThrow(/outside the table's 5 rows/);
  });
});

describe('softmax', () => {
  for (const [rows, len, amp] of [
    [1, 1, 1],
    [3, 37, 4],
    [77, 300, 2], // rows longer than the workgroup
    [5, 1031, 30], // large logits: the max subtraction matters
  ]) {
    it(`[${rows}, ${len}]: forward and backward`, async () => {
      const gpu = await testGpu();
      const x = randn(rows * len, 3, amp);
      const dy = randn(rows * len, 4);
      const xt = Tensor.from(gpu, x, [rows, len]);
      const y = await gpu.checked(() => softmax(xt));
      const want = ref.softmax(x, len);
      expectClose(await y.read(), want, 1e-5, 'softmax forward');
      const dx = softmaxBackward(y, Tensor.from(gpu, dy, [rows, len]));
      if (len > 1) expectGradient(await dx.read(), ([v]) => ref.softmax(v, len), [x], 0, dy, 'softmax dx');
      else expect([...(await dx.read())]).toEqual([0]);
    });
  }

  it('batched scores [3, 13, 29] softmax over the last dimension', async () => {
    const gpu = await testGpu();
    const x = randn(3 * 13 * 29, 9, 3);
    const y = softmax(Tensor.from(gpu, x, [3, 13, 29]));
    expect(y.shape).toEqual([3, 13, 29]);
    expectClose(await y.read(), ref.softmax(x, 29), 1e-5, 'softmax 3-D');
  });
});

describe('transpose', () => {
  for (const [batch, rows, cols] of [
    [1, 1, 1],
    [1, 5, 3],
    [3, 17, 33], // not multiples of the 16 x 16 tile
    [2, 64, 48],
  ]) {
    it(`[${batch}, ${rows}, ${cols}]: forward exact, backward is the transpose back`, async () => {
      const gpu = await testGpu();
      const x = randn(batch * rows * cols, 5);
      const dy = randn(batch * rows * cols, 6);
      const xt = Tensor.from(gpu, x, [batch, rows, cols]);
      const y = await gpu.checked(() => transpose(xt));
      expect(y.shape).toEqual([batch, cols, rows]);
      expectClose(await y.read(), ref.transpose(x, batch, rows, cols), 0, 'transpose (exact)');
      const dx = transposeBackward(Tensor.from(gpu, dy, [batch, cols, rows]));
      expect(dx.shape).toEqual([batch, rows, cols]);
      expectGradient(await dx.read(), ([v]) => ref.transpose(v, batch, rows, cols), [x], 0, dy, 'transpose dx');
    });
  }

  it('NCHW -> tokens -> NCHW round trip on a non-square map', async () => {
    const gpu = await testGpu();
    const [b, c, h, w] = [3, 5, 4, 7];
    const x = randn(b * c * h * w, 7);
    const tokens = channelsToTokens(Tensor.from(gpu, x, [b, c, h, w]));
    expect(tokens.shape).toEqual([b, h * w, c]);
    expectClose(await tokens.read(), ref.transpose(x, b, c, h * w), 0, 'tokens');
    const back = tokensToChannels(tokens, [h, w]);
    expect(back.shape).toEqual([b, c, h, w]);
    expectClose(await back.read(), x, 0, 'round trip');
  });
});
