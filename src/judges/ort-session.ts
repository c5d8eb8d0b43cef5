// ONNX Runtime Web sessions for the judges. In a browser (or worker) with WebGPU the session asks for
// ORT's WebGPU execution provider and falls back to its wasm one with a notice; in Node the wasm backend
// runs (ORT's Node build has no WebGPU provider). One thread: the lab's own GPU work and the CLI's other
// jobs share the machine, and multi-threaded wasm needs cross-origin isolation in the browser.

import * as ort from 'onnxruntime-web';

export type JudgeBackend = 'webgpu' | 'wasm';

export interface SessionOptions {
  /** Providers to try, in order; default: WebGPU then wasm where the platform has WebGPU, else wasm. */
  backends?: readonly JudgeBackend[];
  /** Told when a provider fails and the next one is tried. */
  onNotice?: (text: string) => void;
}

/** A model file that ONNX Runtime refused, or whose inputs and outputs are not the expected ones. */
export class JudgeModelError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = 'JudgeModelError';
  }
}

let configured = false;
function configure(): void {
  if (configured) return;
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = 'error';
  configured = true;
}

function hasWebGpu(): boolean {
  const nav = (globalThis as { navigator?: { gpu?: unknown } }).navigator;
  const isNode = typeof process !== 'undefined' && typeof process.versions?.node === 'string';
  return !isNode && nav?.gpu !== undefined;
}

/**
 * Where the browser fetches ORT's wasm binary from. ORT looks for it beside its own script by default, which
 * a bundler moves (Vite's dev server serves dependencies pre-bundled from another folder): the app's worker
 * passes the URL the bundler gave the file (`?url` import), in the dev server and in the built app alike.
 * (In Node ORT reads the file from its package.)
 */
export function setOrtWasmUrl(url: string): void {
  ort.env.wasm.wasmPaths = { wasm: url };
}

/** The default order of providers on this platform. */
export function defaultBackends(): JudgeBackend[] {
  return hasWebGpu() ? ['webgpu', 'wasm'] : ['wasm'];
}

/** A session on the first provider that loads `bytes`; errors name `file`. */
export async function createJudgeSession(bytes: Uint8Array, file: string, options: SessionOptions = {}): Promise<{ session: ort.InferenceSession; backend: JudgeBackend }> {
  configure();
  const backends = options.backends ?? defaultBackends();
  if (bytes.length === 0) throw new JudgeModelError(file, 'the file is empty, not an ONNX model');
  let lastError: unknown = null;
  for (const [i, backend] of backends.entries()) {
    try {
      // Errors only: ORT's warnings (e.g. shape ops placed on the CPU beside the WebGPU provider) are routine.
      const session = await ort.InferenceSession.create(bytes, { executionProviders: [backend], graphOptimizationLevel: 'all', logSeverityLevel: 3 });
      return { session, backend };
    } catch (e) {
      lastError = e;
      const reason = e instanceof Error ? e.message : String(e);
      // A file ORT cannot parse fails the same way on every provider: say so at once.
      if (/protobuf parsing failed|model format|invalid model|Load model from .* failed/i.test(reason)) {
        throw new JudgeModelError(file, `not an ONNX model that ONNX Runtime can read (${reason.trim()}); expected the .onnx file of a CLIP export`);
      }
      if (i + 1 < backends.length) options.onNotice?.(`${file}: the ${backend} provider failed (${reason.trim()}); using ${backends[i + 1]} instead`);
    }
  }
  const reason = lastError instanceof Error ? lastError.message : String(lastError);
  throw new JudgeModelError(file, `ONNX Runtime could not load it (${reason.trim()})`);
}

export { ort };
