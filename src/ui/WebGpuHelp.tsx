// Shown when the browser has no WebGPU or no adapter: what is missing and how to turn it on.

export function WebGpuHelp({ reason, onRetry }: { reason: string; onRetry: () => void }) {
  return (
    <div className="notice notice-error webgpu-help" role="alert">
      <h3>WebGPU is not available</h3>
      <p>
        TPO Lab runs all of its work on your GPU through WebGPU, and this browser did not provide it.
      </p>
      <p className="muted reason">Details: {reason}</p>
      <h4>How to enable it</h4>
      <ul>
        <li>
          <strong>Chrome or Edge 113 or newer</strong> (Windows, macOS, ChromeOS): WebGPU is on by default. Update the
          browser, and make sure hardware acceleration is on (Settings → System → “Use graphics acceleration when
          available”). <code>chrome://gpu</code> shows whether WebGPU is enabled and why not.
        </li>
        <li>
          <strong>Chrome or Chromium on Linux</strong>: open <code>chrome://flags/#enable-unsafe-webgpu</code> and set
          it to Enabled, enable Vulkan with <code>chrome://flags/#enable-vulkan</code>, then restart the browser. Or
          start it with <code>--enable-unsafe-webgpu --enable-features=Vulkan</code>. (In Edge the same pages are
          under <code>edge://flags</code>.)
        </li>
        <li>
          <strong>Firefox</strong>: use Firefox Nightly, open <code>about:config</code> and set{' '}
          <code>dom.webgpu.enabled</code> to <code>true</code>.
        </li>
        <li>
          <strong>Safari</strong>: use Safari Technology Preview and turn on WebGPU under Develop → Feature Flags.
        </li>
      </ul>
      <p className="muted">
        Addresses starting with <code>chrome://</code> and <code>about:</code> cannot be opened from a link: copy them
        into the address bar.
      </p>
      <button type="button" onClick={onRetry}>
        Check again
      </button>
    </div>
  );
}
