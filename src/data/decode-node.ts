// Image decoding in Node (the CLI and the tests), in pure JavaScript: pngjs for PNG (every bit depth,
// palette, grey, alpha, interlaced) and jpeg-js for JPEG (baseline and progressive), with the EXIF
// orientation applied. GIF, BMP and WebP are refused with a message: the browser app decodes them.
// Node-only (pngjs needs node:zlib), so it is not exported from ./index.

import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import { sniffImage } from './image';
import { applyOrientation, checkImageSize, ImageDecodeError, imageSize, jpegOrientation, MAX_IMAGE_PIXELS, type RgbaImage } from './pixels';

/** jpeg-js's own memory cap, for the largest image accepted: about 16 bytes a pixel (DCT coefficients of 3 full-size components + RGBA output), with room to spare. */
const JPEG_MAX_MEMORY_MB = Math.ceil((MAX_IMAGE_PIXELS * 24) / (1024 * 1024));

/** Decodes a PNG or JPEG file's bytes to RGBA8 (JPEGs turned upright by their EXIF orientation). Throws ImageDecodeError. */
export async function decodeImageNode(bytes: Uint8Array, file: string): Promise<RgbaImage> {
  const kind = sniffImage(bytes);
  if (kind === null) {
    throw new ImageDecodeError(
      file,
      bytes.length === 0 ? 'the file is empty, not an image' : 'not an image: its first bytes are not those of a PNG, JPEG, WebP, GIF or BMP file',
    );
  }
  if (kind !== 'png' && kind !== 'jpeg') {
    throw new ImageDecodeError(
      file,
      `${kind.toUpperCase()} images are not decoded by the command-line tool (only PNG and JPEG): convert it to PNG or JPEG, or use the browser app, which decodes ${kind.toUpperCase()}`,
    );
  }
  const size = imageSize(bytes);
  if (size === null) throw new ImageDecodeError(file, `the ${kind.toUpperCase()} header is damaged or cut short (no image size found); re-save the image as PNG or JPEG`);
  checkImageSize(size.width, size.height, file);

  let img: RgbaImage;
  try {
    if (kind === 'png') {
      const png = pngjs.PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      img = { width: png.width, height: png.height, data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.byteLength) };
    } else {
      const decoded = jpeg.decode(bytes, {
        useTArray: true,
        formatAsRGBA: true,
        maxResolutionInMP: Math.ceil(MAX_IMAGE_PIXELS / 1e6),
        maxMemoryUsageInMB: JPEG_MAX_MEMORY_MB,
      });
      img = applyOrientation({ width: decoded.width, height: decoded.height, data: decoded.data }, jpegOrientation(bytes));
    }
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new ImageDecodeError(file, `the ${kind.toUpperCase()} file is damaged or cut short and could not be decoded (${reason}); re-save or re-export it`);
  }
  if (!(img.width > 0 && img.height > 0) || img.data.length !== img.width * img.height * 4) {
    throw new ImageDecodeError(file, `the ${kind.toUpperCase()} decoder returned ${img.data.length} bytes for ${img.width}x${img.height} pixels: the file is damaged; re-save it`);
  }
  return img;
}
