// Thumbnails of dataset images for the grids: the image's bytes from the lab's storage, as an object URL.
// Only the images on screen are asked for (the grids are virtualised), and the cache keeps a bounded number
// of URLs, revoking the least recently used, so thousands of images do not pile up in memory.

import { useEffect, useState } from 'react';
import { engine } from '../engine';

const MAX_CACHED = 400;
const cache = new Map<string, Promise<string | null>>();

function load(dataset: string, image: string): Promise<string | null> {
  const key = `${dataset}/${image}`;
  const hit = cache.get(key);
  if (hit) {
    // Most recently used last.
    cache.delete(key);
    cache.set(key, hit);
    return hit;
  }
  const url = engine()
    .lab.datasetImage(dataset, image)
    .then((r) => (r.ok ? URL.createObjectURL(new Blob([r.value as Uint8Array<ArrayBuffer>])) : null));
  cache.set(key, url);
  while (cache.size > MAX_CACHED) {
    const [oldest, promise] = cache.entries().next().value!;
    cache.delete(oldest);
    void promise.then((u) => u && URL.revokeObjectURL(u));
  }
  return url;
}

/** The image's object URL once loaded (null while loading or when it cannot be read). */
export function useThumbnail(dataset: string, image: string): string | null {
  const [url, setUrl] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    setUrl(null);
    void load(dataset, image).then((u) => live && setUrl(u));
    return () => {
      live = false;
    };
  }, [dataset, image]);
  return url;
}
