// Image decoding in the browser (page or Web Worker): the browser's own decoders through createImageBitmap,
// so every format it knows works (PNG, JPEG, WebP, GIF's first frame, BMP), EXIF orientation applied, then
// the pixels read back from an OffscreenCanvas.

import { sniffImage } from './image';
import { checkImageSize, ImageDecodeError, imageSize, type RgbaImage } from './pixels';

/**
 * Decodes an image file's bytes to RGBA8, upright. The size is checked from the header before decoding.
 * Colour profiles are not applied (colorSpaceConversion 'none'), matching Pillow in the usual Python
 * training scripts. The canvas keeps premultiplied alpha, so the colour of nearly transparent pixels is
 * approximate; opaque pixels are exact.
 */
export async function decodeImageBrowser(bytes: Uint8Array, file: string): Promise<RgbaImage> {
  const kind = sniffImage(bytes);
  if (kind === null) {
    throw new ImageDecodeError(
      file,
      bytes.length === 0 ? 'the file is empty, not an image' : 'not an image: its first bytes are not those of a PNG, JPEG, WebP, GIF or BMP file',
    );
  }
  const size = imageSize(bytes);
  if (size === null) throw new ImageDecodeError(file, `the ${kind.toUpperCase()} header is damaged or cut short (no image size found); re-save the image as PNG or JPEG`);
  checkImageSize(size.width, size.height, file);

  let bitmap: ImageBitmap;
  try {
    const blob = new Blob([bytes as Uint8Array<ArrayBuffer>], { type: `image/${kind}` });
    bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image', premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new ImageDecodeError(file, `the ${kind.toUpperCase()} file is damaged or cut short and this browser could not decode it (${reason}); re-save or re-export it`);
  }
  try {
    const { width, height } = bitmap;
    checkImageSize(width, height, file);
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    if (!ctx) throw new ImageDecodeError(file, 'this browser gave no 2D canvas to read the pixels with');
    ctx.drawImage(bitmap, 0, 0);
    const pixels = ctx.getImageData(0, 0, width, height);
    return { width, height, data: new Uint8Array(pixels.data.buffer, pixels.data.byteOffset, pixels.data.byteLength) };
  } finally {
    bitmap.close();
  }
}
