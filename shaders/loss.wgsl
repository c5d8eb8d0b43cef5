// TPO losses on the per-example denoising errors (see docs/TPO_SPEC.md), forward and backward in one
// kernel: B is small (the batch), so one workgroup does everything and writes the loss, the gradient of
// the loss w.r.t. each policy error, and the step metrics. The reference errors get no gradient.
//   D_w = e_policy_w - e_ref_w,  D_l = e_policy_l - e_ref_l,  tau = kappa / beta
//   clipped D~_l = min(D_l, tau) when clipping; where the clip is active D_l gets no gradient
//   TDPO (and Diffusion-DPO, with w / l two images): loss = mean_i -log sigmoid(beta (D~_l - D_w))
//   TKTO (and Diffusion-KTO): g_w = -D_w, g_l = -D_l, z = max(0, mean of all 2B g) held constant,
//     loss = sum_i [lambda_d (1 - sigmoid(beta (g_w - z))) + lambda_u (1 - sigmoid(beta (z - max(g_l, -tau))))] / 2B
//   SFT: loss = mean_i e_policy_w
// Metrics: implicit margin m = beta (D_l - D_w) (unclipped), accuracy mean(m > 0) + 0.5 mean(m == 0).

struct Params {
  batch: u32,
  method: u32,     // 0 TDPO / Diffusion-DPO, 1 TKTO / Diffusion-KTO, 2 SFT
  clip: u32,       // 1: clip the negative term at tau
  beta: f32,
  tau: f32,
  lambda_d: f32,
  lambda_u: f32,
  grad_scale: f32, // multiplies the gradients (1 / accumulation steps)
}

@group(0) @binding(0) var<uniform> p: Params;
// Errors come as [2B]: the B matched (w) examples, then the B mismatched (l) ones, the order in which
// the two prompts of each example are batched through the UNet together. err_diff is e_policy - e_ref,
// computed directly (reduce.wgsl's mse_diff_forward) because it is ~1e-3 of either error.
@group(0) @binding(1) var<storage, read> err_policy: array<f32>;
@group(0) @binding(2) var<storage, read> err_diff: array<f32>;
@group(0) @binding(3) var<storage, read_write> d_err_policy: array<f32>;
// [0] loss, [1] implicit accuracy, [2] mean margin, [3] clip-active fraction, [4] TKTO z,
// [5..8] mean e_policy_w, e_ref_w, e_policy_l, e_ref_l, then [9..9+B) each example's margin.
@group(0) @binding(4) var<storage, read_write> metrics: array<f32>;

// -log(sigmoid(x)) = softplus(-x), computed without overflow for large |x|.
fn neg_log_sigmoid(x: f32) -> f32 {
  return max(-x, 0.0) + log(1.0 + exp(-abs(x)));
}

@compute @workgroup_size(1)
fn tpo_loss() {
  let b = p.batch;
  let fb = f32(b);
  var z = 0.0;
  if (p.method == 1u) {
    var sum = 0.0;
    for (var i = 0u; i < b; i = i + 1u) {
      sum = sum - err_diff[i] - err_diff[b + i];
    }
    z = max(0.0, sum / (2.0 * fb));
  }
  var loss = 0.0;
  var correct = 0.0;
  var margin_sum = 0.0;
  var clipped = 0.0;
  var sums = vec4f(0.0);
  for (var i = 0u; i < b; i = i + 1u) {
    let dw = err_diff[i];
    let dl = err_diff[b + i];
    let clip_active = p.clip == 1u && dl > p.tau;
    let dl_clipped = select(dl, p.tau, clip_active);
    let m = p.beta * (dl - dw);
    metrics[9u + i] = m;
    margin_sum = margin_sum + m;
    correct = correct + select(select(0.0, 0.5, m == 0.0), 1.0, m > 0.0);
    clipped = clipped + select(0.0, 1.0, clip_active);
    sums = sums + vec4f(err_policy[i], err_policy[i] - dw, err_policy[b + i], err_policy[b + i] - dl);
    switch p.method {
      case 0u: {
        let x = p.beta * (dl_clipped - dw);
        loss = loss + neg_log_sigmoid(x) / fb;
        // d/dx -log sigmoid(x) = -(1 - sigmoid(x)) = -sigmoid(-x); x rises with D~_l and falls with D_w.
        let g = sigmoid(-x) * p.beta / fb;
        d_err_policy[i] = p.grad_scale * g;
        d_err_policy[b + i] = select(-p.grad_scale * g, 0.0, clip_active);
      }
      case 1u: {
        let a = p.beta * (-dw - z);
        let c = p.beta * (z + dl_clipped);  // beta (z - max(g_l, -tau)) with g_l = -D_l
        let sa = sigmoid(a);
        let sc = sigmoid(c);
        loss = loss + (p.lambda_d * (1.0 - sa) + p.lambda_u * (1.0 - sc)) / (2.0 * fb);
        d_err_policy[i] = p.grad_scale * p.lambda_d * p.beta * sa * (1.0 - sa) / (2.0 * fb);
        d_err_policy[b + i] = select(-p.grad_scale * p.lambda_u * p.beta * sc * (1.0 - sc) / (2.0 * fb), 0.0, clip_active);
      }
      default: {
        loss = loss + err_policy[i] / fb;
        d_err_policy[i] = p.grad_scale / fb;
        d_err_policy[b + i] = 0.0;
      }
    }
  }
  metrics[0] = loss;
  metrics[1] = correct / fb;
  metrics[2] = margin_sum / fb;
  metrics[3] = clipped / fb;
  metrics[4] = z;
  metrics[5] = sums.x / fb;
  metrics[6] = sums.y / fb;
  metrics[7] = sums.z / fb;
  metrics[8] = sums.w / fb;
}
