"""AdamW (torch.optim.AdamW's formula) on register blocks, shared by every training kernel."""
import triton
import triton.language as tl


@triton.jit
def load_step_constants(consts_ptr, t):
    """Row t of TrainConfig.adamw_constants(): (1 - lr_t wd, lr_t / (1 - b1^(t+1)), sqrt(1 - b2^(t+1)),
    1 - b1, 1 - b2); the last two computed in float64 on the host (in float32, 1 - b2 from b2 = 0.999
    rounded is 0.0009999871: every v update 1.3e-5 short of the reference's, a bias that accumulates)."""
    row = consts_ptr + 5 * t
    return tl.load(row), tl.load(row + 1), tl.load(row + 2), tl.load(row + 3), tl.load(row + 4)


@triton.jit
def adamw_update(p, g, m, v, decay, step_size, bc2_sqrt, omb1, omb2, beta1, beta2, eps):
    """One step (omb1, omb2: 1 - beta1, 1 - beta2 from the table); IEEE sqrt and division so the kernels
    track the reference to float32 rounding."""
    p = p * decay
    m = beta1 * m + omb1 * g
    v = beta2 * v + omb2 * g * g
    denom = tl.div_rn(tl.sqrt_rn(v), bc2_sqrt) + eps
    p = p - step_size * tl.div_rn(m, denom)
    return p, m, v
