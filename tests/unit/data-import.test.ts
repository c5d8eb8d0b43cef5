// Dataset import of every supported layout, from temporary folders of small generated files.

import { afterEach, describe, expect, it } from 'vitest';
import { sniffImage } from '../../src/data/image';
import { importDataset, parseTrainerJsonl } from '../../src/data/import';
import { importPath, nodeSource } from '../../src/data/node-fs';
import { filesSource } from '../../src/data/source';
import { DatasetImportError, formatProblem, type ImportProblem } from '../../src/data/types';
import { bmpHead, GIF_HEAD, JPEG_HEAD, tempDir, tinyPng, WEBP_HEAD } from '../helpers/llm/files';

const dirs: { cleanup: () => void }[] = [];
function folder() {
  const d = tempDir();
  dirs.push(d);
  return d;
}
afterEach(() => {
  while (dirs.length) dirs.pop()!.cleanup();
});

async function problemsOf(p: Promise<unknown>): Promise<ImportProblem[]> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(DatasetImportError);
    return (e as DatasetImportError).problems;
  }
  throw new Error('expected DatasetImportError');
}

describe('image sniffing', () => {
  it('knows PNG, JPEG, WebP, GIF and BMP by their bytes', () => {
    expect(sniffImage(tinyPng())).toBe('png');
    expect(sniffImage(JPEG_HEAD)).toBe('jpeg');
    expect(sniffImage(WEBP_HEAD)).toBe('webp');
    expect(sniffImage(GIF_HEAD)).toBe('gif');
    expect(sniffImage(bmpHead())).toBe('bmp');
    expect(sniffImage(Buffer.from('BM this is text, not a bitmap'))).toBeNull();
    expect(sniffImage(Buffer.from('hello'))).toBeNull();
    expect(sniffImage(new Uint8Array(0))).toBeNull();
  });
});

describe('kohya folder (image + .txt caption)', () => {
  it('imports images with their captions, in subfolders too', async () => {
    const d = folder();
    d.write('a.png', tinyPng());
    d.write('a.txt', 'a red cube\n');
    d.write('10_style/b.jpg', JPEG_HEAD);
    d.write('10_style/b.txt', 'two dogs,\nin the snow');
    d.write('c.webp', WEBP_HEAD);
    d.write('c.caption', 'a gif? no, a webp');
    d.write('.hidden/x.png', Buffer.from('junk'));
    const r = await importPath(d.dir);
    expect(r.layout).toBe('kohya');
    expect(r.items.map((i) => [i.image, i.caption])).toEqual([
      ['10_style/b.jpg', 'two dogs, in the snow'],
      ['a.png', 'a red cube'],
      ['c.webp', 'a gif? no, a webp'],
    ]);
    expect(r.items.every((i) => i.negatives.length === 0 && i.id === i.image)).toBe(true);
    expect(r.problems).toEqual([]);
  });

  it('reports a missing image, an empty caption, a non-image file and a missing caption', async () => {
    const d = folder();
    d.write('good.png', tinyPng());
    d.write('good.txt', 'a cat');
    d.write('orphan.txt', 'a caption without its image');
    d.write('empty.png', tinyPng());
    d.write('empty.txt', '   \n');
    d.write('fake.png', 'this is not a png');
    d.write('fake.txt', 'a fake image');
    d.write('notes.pdf', '%PDF-1.4');
    d.write('notes.txt', 'captioning a pdf');
    d.write('nocap.gif', GIF_HEAD);
    const problems = await problemsOf(importPath(d.dir));
    const byCode = Object.fromEntries(problems.map((p) => [p.file, [p.code, p.message]]));
    expect(byCode['orphan.txt']).toEqual(['missing-image', 'caption file orphan.txt has no image beside it (orphan.png, .jpg, .webp...)']);
    expect(byCode['empty.txt']).toEqual(['empty-caption', 'empty caption: empty.txt (for empty.png)']);
    expect(byCode['fake.png']).toEqual(['not-an-image', 'fake.png is not an image (its first bytes are not PNG, JPEG, WebP, GIF or BMP)']);
    expect(byCode['notes.txt']).toEqual(['not-an-image', 'notes.pdf (captioned by notes.txt) is not an image']);
    expect(byCode['nocap.gif']).toEqual(['missing-caption', 'nocap.gif has no caption file (nocap.txt beside it)']);
    expect(problems).toHaveLength(5);
  });

  it('skips the broken records only when asked', async () => {
    const d = folder();
    d.write('good.png', tinyPng());
    d.write('good.txt', 'a cat');
    d.write('fake.png', 'not a png');
    d.write('fake.txt', 'x');
    const r = await importPath(d.dir, { onInvalid: 'skip' });
    expect(r.items.map((i) => i.image)).toEqual(['good.png']);
    expect(r.problems.map((p) => p.code)).toEqual(['not-an-image']);
  });

  it('says clearly when a folder holds no dataset', async () => {
    const d = folder();
    d.write('readme.md', '# hi');
    const problems = await problemsOf(importPath(d.dir));
    expect(problems[0].code).toBe('no-data');
    expect(problems[0].message).toMatch(/no images with captions/);
  });
});

describe('Hugging Face imagefolder (metadata.jsonl)', () => {
  it('reads file_name and text, keeping other fields', async () => {
    const d = folder();
    d.write('train/img/1.png', tinyPng());
    d.write('train/img/2.bmp', bmpHead());
    d.write('train/metadata.jsonl', '{"file_name": "img/1.png", "text": "a red cube", "aesthetic": 6.5}\n\n{"file_name": "img/2.bmp", "text": "a bitmap"}\n');
    const r = await importPath(d.dir);
    expect(r.layout).toBe('imagefolder');
    expect(r.items.map((i) => [i.image, i.caption, i.extra])).toEqual([
      ['train/img/1.png', 'a red cube', { aesthetic: 6.5 }],
      ['train/img/2.bmp', 'a bitmap', {}],
    ]);
  });

  it('reports bad lines with their line numbers', async () => {
    const d = folder();
    d.write('1.png', tinyPng());
    d.write('metadata.jsonl', ['{"file_name": "1.png", "text": "ok"}', '{not json', '{"file_name": "2.png", "text": "missing"}', '{"file_name": "1.png", "text": ""}', '{"text": "no file"}'].join('\n'));
    const problems = await problemsOf(importPath(d.dir));
    expect(problems.map((p) => [p.line, p.code])).toEqual([
      [2, 'bad-line'],
      [3, 'missing-image'],
      [4, 'empty-caption'],
      [5, 'bad-line'],
    ]);
    expect(formatProblem(problems[1])).toBe('metadata.jsonl:3: image not found: 2.png');
    expect(problems[0].message).toMatch(/^not valid JSON/);
    expect(problems[3].message).toBe('no image path (field "file_name")');
  });
});

describe('CSV', () => {
  it('detects columns, handles quoting and reports the line a record starts on', async () => {
    const d = folder();
    d.write('imgs/a.png', tinyPng());
    d.write('imgs/b.png', tinyPng());
    d.write('imgs/c.png', tinyPng());
    d.write(
      'captions.csv',
      '\ufeffImage_Path,Prompt,score\n' +
        'imgs/a.png,"a cube, red and small",1\n' +
        '\n' +
        'imgs/b.png,"a caption\nover two lines",2\n' +
        'imgs/c.png,only two fields\n' +
        'imgs/missing.png,a lost image,3\n' +
        'imgs/a.png,,4\n',
    );
    const problems = await problemsOf(importPath(`${d.dir}/captions.csv`));
    expect(problems.map((p) => [p.line, p.code])).toEqual([
      [6, 'bad-line'],
      [7, 'missing-image'],
      [8, 'empty-caption'],
    ]);
    expect(problems[0].message).toMatch(/Too few fields/);
    const r = await importPath(`${d.dir}/captions.csv`, { onInvalid: 'skip' });
    expect(r.layout).toBe('csv');
    expect(r.items.map((i) => [i.image, i.caption, i.extra])).toEqual([
      ['imgs/a.png', 'a cube, red and small', { score: '1' }],
      ['imgs/b.png', 'a caption over two lines', { score: '2' }],
    ]);
    expect(r.skipped).toBe(3);
  });

  it('names the columns it could not find, and takes explicit ones', async () => {
    const d = folder();
    d.write('a.png', tinyPng());
    d.write('data.csv', 'picture,words\na.png,a cat\n');
    const problems = await problemsOf(importPath(`${d.dir}/data.csv`));
    expect(problems[0].message).toMatch(/no an image-path column .* and a caption column/);
    const r = await importPath(`${d.dir}/data.csv`, { imageColumn: 'picture', captionColumn: 'words' });
    expect(r.items.map((i) => i.caption)).toEqual(['a cat']);
  });
});

describe('JSONL and the trainer format', () => {
  it('reads generic JSONL with path/caption columns', async () => {
    const d = folder();
    d.write('x/a.gif', GIF_HEAD);
    d.write('list.jsonl', '{"path": "x/a.gif", "prompt": "a gif", "id": 7}\n');
    const r = await importPath(`${d.dir}/list.jsonl`);
    expect(r.layout).toBe('jsonl');
    expect(r.items[0]).toMatchObject({ image: 'x/a.gif', caption: 'a gif', extra: { id: 7 } });
  });

  it('reads the trainer JSONL with negatives, keeping unknown fields', async () => {
    const d = folder();
    d.write('data/a.png', tinyPng());
    d.write(
      'data/pairs.jsonl',
      JSON.stringify({
        image: 'a.png',
        caption: 'a red cube',
        split: 'train',
        negatives: [
          { caption: 'a blue cube', principle: 'attribute', source: 'llm', status: 'accepted', score: 0.9 },
          { caption: 'two red cubes', principle: 'content', source: 'rule' },
          'a red ball',
        ],
        label: true,
      }) + '\n',
    );
    const r = await importPath(`${d.dir}/data/pairs.jsonl`);
    expect(r.layout).toBe('trainer');
    const item = r.items[0];
    expect(item.image).toBe('a.png');
    expect(item.extra).toEqual({ split: 'train', label: true });
    expect(item.negatives.map((n) => [n.caption, n.principle, n.source, n.status, n.extra])).toEqual([
      ['a blue cube', 'attribute', 'llm', 'accepted', { score: 0.9 }],
      ['two red cubes', 'content', 'rule', 'pending', {}],
      ['a red ball', 'other', 'manual', 'pending', {}],
    ]);
  });

  it('reports bad trainer lines: principle, status, DPO records, non-objects', async () => {
    const d = folder();
    d.write('a.png', tinyPng());
    const lines = [
      { image: 'a.png', caption: 'ok' },
      { image: 'a.png', caption: 'x', negatives: [{ caption: 'y', principle: 'colour' }] },
      { image: 'a.png', caption: 'x', negatives: [{ caption: 'y', status: 'maybe' }] },
      { prompt: 'p', image_w: 'a.png', image_l: 'a.png' },
      [1, 2],
      { image: 'a.png', caption: 'x', negatives: 'y' },
    ].map((l) => JSON.stringify(l));
    d.write('t.jsonl', lines.join('\n'));
    const problems = await problemsOf(importPath(`${d.dir}/t.jsonl`));
    expect(problems.map((p) => [p.line, p.code, p.message])).toEqual([
      [2, 'bad-line', 'negative 1: principle "colour" is not one of content, attribute, spatial, context, other'],
      [3, 'bad-line', 'negative 1: status "maybe" is not one of pending, accepted, rejected'],
      [4, 'unsupported-record', 'a Diffusion-DPO record (prompt, image_w, image_l) has no single image and caption to edit'],
      [5, 'bad-line', 'not a JSON object'],
      [6, 'bad-line', '"negatives" must be a list'],
    ]);
  });

  it('parses trainer JSONL text without touching images', () => {
    const r = parseTrainerJsonl('{"image": "nowhere.png", "caption": "c"}\nnot json\n', { file: 'out.jsonl', onInvalid: 'skip' });
    expect(r.items).toHaveLength(1);
    expect(r.problems.map(formatProblem)).toEqual([expect.stringMatching(/^out\.jsonl:2: not valid JSON/)]);
    expect(() => parseTrainerJsonl('nope')).toThrow(DatasetImportError);
  });

  it('picks the single data file of a folder', async () => {
    const d = folder();
    d.write('a.png', tinyPng());
    d.write('data.jsonl', '{"image": "a.png", "caption": "a"}\n');
    const r = await importDataset(nodeSource(d.dir));
    expect(r.layout).toBe('trainer');
    expect(r.items).toHaveLength(1);
  });
});

describe('browser File objects', () => {
  it('imports a picked folder with the same code', async () => {
    const files = [
      new File([new Uint8Array(tinyPng())], 'a.png'),
      new File(['a red cube'], 'a.txt'),
      new File(['not an image'], 'b.png'),
      new File(['b caption'], 'b.txt'),
    ];
    for (const f of files) Object.defineProperty(f, 'webkitRelativePath', { value: `picked/${f.name}` });
    const source = filesSource(files, 'picked');
    const problems = await problemsOf(importDataset(source));
    expect(problems.map((p) => [p.file, p.code])).toEqual([['b.png', 'not-an-image']]);
    const r = await importDataset(source, { onInvalid: 'skip' });
    expect(r.items.map((i) => [i.image, i.caption])).toEqual([['a.png', 'a red cube']]);
  });

  it('imports a CSV dropped with its images', async () => {
    const source = filesSource([new File(['file_name,text\na.png,hello\n'], 'list.csv'), new File([new Uint8Array(tinyPng())], 'a.png')]);
    const r = await importDataset(source, { file: 'list.csv' });
    expect(r.items.map((i) => [i.image, i.caption])).toEqual([['a.png', 'hello']]);
  });
});
