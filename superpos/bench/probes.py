"""Small kernels whose SASS the cost model reads to price one operation (not used for training)."""
import triton
import triton.language as tl


@triton.jit
def _philox_probe_kernel(seed, out_ptr, step, n_iter, BLOCK: tl.constexpr):
    """n_iter tl.philox calls per lane with the kernels' counter layout: (c0 varying per lane, step, 0, 0)
    under a uniform key; the words are folded so that none is dead code."""
    c0 = tl.arange(0, BLOCK).to(tl.uint32)
    zero = c0 * 0
    acc = zero
    for i in range(n_iter):
        r0, r1, r2, r3 = tl.philox(seed, c0 + i * BLOCK, zero + step.to(tl.uint32), zero, zero)
        acc = acc ^ r0 ^ r1 ^ r2 ^ r3
    tl.store(out_ptr + tl.arange(0, BLOCK), acc)


def philox_probe_launch():
    """The recorded launch of one warp making one Philox call per lane per loop trip (not run)."""
    import torch

    from ..kernels.as_launched import recording
    with recording() as launches:
        _philox_probe_kernel[(1,)](12345, torch.empty(32, dtype=torch.int32), 7, 3, BLOCK=32, num_warps=1)
    return launches[0]
