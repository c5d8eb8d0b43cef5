import { GpuPanel } from './GpuPanel';

export function App() {
  return (
    <div className="page">
      <header className="page-header">
        <h1>TPO Lab</h1>
        <p className="tagline">Text Preference Optimization for Stable Diffusion v1.5, in your browser.</p>
      </header>

      <main>
        <section className="card about" aria-labelledby="about-heading">
          <h2 id="about-heading">What this is</h2>
          <p>
            TPO Lab fine-tunes Stable Diffusion v1.5 with Text Preference Optimization entirely in this browser tab, on
            your own GPU through WebGPU: no server, no Python, and your images never leave your machine. You will load a
            model you already have, import captioned images, create mismatched captions with an LLM of your choice or the
            built-in editor, train a LoRA with TDPO or TKTO, compare samples before and after, and export a LoRA that
            Automatic1111, ComfyUI and diffusers load as is. Those steps arrive in coming versions; for now this page
            checks that your browser and GPU can run the engine.
          </p>
        </section>

        <GpuPanel />
      </main>
    </div>
  );
}
