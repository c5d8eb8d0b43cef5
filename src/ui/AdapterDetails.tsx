// The adapter's identity, the optional features the engine uses, and the limits that decide what fits.

import type { AdapterReport } from '../worker/api';
import { formatCount } from './format';
import { formatBytes } from '../util/format';

const FEATURES: { name: string; present: string; absent: string }[] = [
  {
    name: 'shader-f16',
    present: 'Frozen weights can be stored in half precision (SD1.5 UNet: 1.7 GB instead of 3.4 GB).',
    absent: 'Weights stay in 32-bit floats, which needs about twice the GPU memory.',
  },
  {
    name: 'subgroups',
    present: 'Available for faster reductions; the current kernels reduce through workgroup memory and do not need it.',
    absent: 'Not needed: the kernels reduce through workgroup memory.',
  },
  {
    name: 'timestamp-query',
    present: 'Kernels can be timed precisely on the GPU.',
    absent: 'Timings are measured from the CPU side, less precisely.',
  },
];

const LIMITS: { name: string; label: string; bytes: boolean; why: string }[] = [
  { name: 'maxBufferSize', label: 'Largest buffer', bytes: true, why: 'Caps the size of any single tensor.' },
  {
    name: 'maxStorageBufferBindingSize',
    label: 'Largest storage binding',
    bytes: true,
    why: 'How much of a buffer one kernel can see at once: it bounds the largest tensor a kernel reads.',
  },
  {
    name: 'maxComputeWorkgroupStorageSize',
    label: 'Workgroup shared memory',
    bytes: true,
    why: 'Bounds the tiles of matrix multiplication and attention.',
  },
  {
    name: 'maxComputeInvocationsPerWorkgroup',
    label: 'Threads per workgroup',
    bytes: false,
    why: 'Largest workgroup a kernel can use.',
  },
  {
    name: 'maxStorageBuffersPerShaderStage',
    label: 'Storage buffers per kernel',
    bytes: false,
    why: 'How many tensors one kernel can read and write.',
  },
  {
    name: 'maxComputeWorkgroupsPerDimension',
    label: 'Workgroups per grid dimension',
    bytes: false,
    why: 'Larger grids are folded into a second dimension.',
  },
];

const SOFTWARE_RENDERERS = /swiftshader|llvmpipe|lavapipe|softpipe|\bwarp\b|basic render/i;

export function AdapterDetails({ adapter }: { adapter: AdapterReport }) {
  const identity = [adapter.vendor, adapter.architecture, adapter.device, adapter.description].join(' ');
  const software = adapter.isFallbackAdapter || SOFTWARE_RENDERERS.test(identity);
  const features = new Set(adapter.features);

  return (
    <div className="adapter">
      <h3>Adapter</h3>
      <dl className="facts" data-testid="adapter-facts">
        <Fact term="Vendor" value={adapter.vendor} />
        <Fact term="Architecture" value={adapter.architecture} />
        <Fact term="Device" value={adapter.device} />
        <Fact term="Description" value={adapter.description} />
        <div>
          <dt>Fallback adapter</dt>
          <dd>{adapter.isFallbackAdapter ? 'Yes (software)' : 'No'}</dd>
        </div>
      </dl>
      {software && (
        <p className="notice notice-warn">
          This is a software renderer: the GPU work runs on your CPU. It is enough to check that everything works,
          but far too slow to train. Use a browser and machine with a hardware GPU for real runs.
        </p>
      )}

      <h3>Features</h3>
      <ul className="features">
        {FEATURES.map((f) => {
          const present = features.has(f.name);
          return (
            <li key={f.name} className={present ? 'present' : 'absent'}>
              <span className="badge" aria-hidden="true">
                {present ? '✓' : '–'}
              </span>
              <code>{f.name}</code>
              <span className="feature-state">{present ? 'present' : 'absent'}</span>
              <span className="muted feature-why">{present ? f.present : f.absent}</span>
            </li>
          );
        })}
      </ul>

      <h3 id="limits-heading">Limits</h3>
      <table className="limits" aria-labelledby="limits-heading">
        <thead>
          <tr>
            <th scope="col">Limit</th>
            <th scope="col">Value</th>
            <th scope="col">Why it matters</th>
          </tr>
        </thead>
        <tbody>
          {LIMITS.map((l) => {
            const value = adapter.limits[l.name];
            return (
              <tr key={l.name}>
                <th scope="row">
                  {l.label}
                  <code className="limit-name">{l.name}</code>
                </th>
                <td className="num">
                  {l.bytes ? formatBytes(value) : formatCount(value)}
                  {l.bytes && value >= 1024 && <span className="exact">{formatCount(value)} bytes</span>}
                </td>
                <td className="muted">{l.why}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

function Fact({ term, value }: { term: string; value: string }) {
  return (
    <div>
      <dt>{term}</dt>
      <dd>{value || <span className="muted">not reported</span>}</dd>
    </div>
  );
}
