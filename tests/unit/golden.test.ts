// `tpo-lab golden` on the shared goldens: the model folder, the single-file checkpoint, the tokenizer cases
// and the schedules. Every check must pass.

import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { captureIO } from '../helpers/cli';
import { main } from '../../src/cli/main';
import { GOLDENS } from '../helpers/goldens';

const capture = () => captureIO({ cwd: process.cwd() });

async function golden(args: string[]): Promise<{ status: number; out: string }> {
  const c = capture();
  const status = await main(['golden', ...args], c.io);
  console.log(c.out());
  if (c.err()) console.error(c.err());
  return { status, out: c.out() };
}

const DIR = join(GOLDENS, 'tiny-sd15');

describe('tpo-lab golden', () => {
  it('passes every check of the model folder', { timeout: 1_800_000 }, async () => {
    const { status, out } = await golden([DIR]);
    expect(out).not.toMatch(/^FAIL/m);
    // Every kind of check ran: block activations, LoRA, TPO errors, losses, gradients, encoders.
    for (const name of ['act.mid_block', 'out.eps_lora', 'out.err_ref_l', 'out.tdpo_loss', 'out.tkto_z', 'grad_tdpo (256 tensors)', 'grad_sft', 'text_encoder', 'vae decoder',
      'sample prompt ids', 'sample cfg7.5.step5', 'sample cfg1.latents', 'sample cfg7.5_lora.image', 'sample cfg7.5.image_uint8']) {
      expect(out).toMatch(new RegExp(`^PASS .*${name.replace(/[().]/g, '\\$&')}`, 'm'));
    }
    expect(out).toMatch(/^51 passed, 0 failed$/m);
    expect(status).toBe(0);
  });

  it('passes every check from the single-file checkpoint', { timeout: 1_800_000 }, async () => {
    const { status, out } = await golden([DIR, '--single-file', join(GOLDENS, 'tiny-sd15-single.safetensors')]);
    expect(out).not.toMatch(/^FAIL/m);
    expect(out).toMatch(/^PASS .*out\.eps_base \(tiny-sd15-single\.safetensors\)/m);
    expect(out).toMatch(/^PASS .*sample cfg7\.5_lora\.latents \(tiny-sd15-single\.safetensors\)/m);
    expect(out).toMatch(/^51 passed, 0 failed$/m);
    expect(status).toBe(0);
  });

  it('matches the tokenizer ids and the schedules exactly', async () => {
    const { status, out } = await golden(['--tokenizer', DIR, '--cases', join(GOLDENS, 'tokenizer-cases.json'), '--schedule', join(GOLDENS, 'schedule.json')]);
    expect(out).toMatch(/^PASS +tokenizer case 0/m);
    expect(out).toMatch(/^PASS +ddim50 timesteps/m);
    expect(out).toMatch(/^PASS +ddim20 step/m);
    expect(out).not.toMatch(/^FAIL/m);
    expect(status).toBe(0);
  });

  it('fails, with status 1, when a check fails', async () => {
    // A wrong cases file: the first prompt's ids do not match.
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const file = join(mkdtempSync(join(tmpdir(), 'golden-')), 'cases.json');
    writeFileSync(file, JSON.stringify({ cases: [{ prompt: 'a photo of a cat', ids: [1, 2], input_ids_77: [] }] }));
    const { status, out } = await golden(['--tokenizer', DIR, '--cases', file]);
    expect(out).toMatch(/^FAIL +tokenizer case 0/m);
    expect(status).toBe(1);
  });
});
