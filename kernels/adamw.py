"""AdamW (torch.optim.AdamW's formula) on register blocks, shared by every training kernel."""
import triton
import triton.language as tl


@triton.jit
def load_step_constants(consts_ptr, t):
    """Row t of TrainConfig.adamw_constants(): (1 - lr_t wd, lr_t / (1 - b1^(t+1)), sqrt(1 - b2^(t+1)))."""
    return tl.load(consts_ptr + 3 * t), tl.load(consts_ptr + 3 * t + 1), tl.load(consts_ptr + 3 * t + 2)


@triton.jit
def adamw_update(p, g, m, v, decay, step_size, bc2_sqrt, beta1, beta2, eps):
    """One step; IEEE sqrt and division so the kernels track the reference to float32 rounding."""
    p = p * decay
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    denom = tl.div_rn(tl.sqrt_rn(v), bc2_sqrt) + eps
    p = p - step_size * tl.div_rn(m, denom)
    return p, m, v
