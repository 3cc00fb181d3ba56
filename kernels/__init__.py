"""Triton kernels (installed as `superpos.kernels`): @triton.jit code and thin launchers taking tensors."""
