"""The peers: how people train populations of toy models today, each written the way they would.

- ``torch``: what public reproductions do. One parameter tensor with an instance axis (K, m, n), autograd,
  ``torch.optim.AdamW`` (fused implementation where torch has it), data drawn with ``torch.rand`` on the
  device, eager execution, one Python-level step at a time.
- ``torch-compile``: the same module, loss and optimizer, with the data draw + forward (+ its backward,
  through AOTAutograd) and ``optimizer.step`` each under ``torch.compile``; on CUDA in
  ``mode="reduce-overhead"`` (CUDA graphs), falling back to the default mode if graphs fail.
- ``jax``: ``vmap`` of one model's ``value_and_grad`` over the K models, AdamW written by hand with
  torch's formula, ``lax.scan`` over steps, all under one ``jit``.

Every peer reads the same TrainConfig (``adamw_constants()`` / ``lr_at()``) and the same Population
(initial weights, feature probabilities, importances) as the library's backends. The data distribution is
the library's (feature i active with probability p_i, then Uniform[0, 1)), drawn with the peer's own RNG:
``u ~ U[0, 1)``, ``x = u / p if u < p else 0`` (one uniform per feature, as the fused kernels do).

Validation mode (``batches="reference"``): the peer is fed exactly the batches of ``sp.sample_batch``
(the reference's Philox stream) so that its result can be compared with ``reference.train_torch``.

Loss: per model, ``mean over batch and features of I_i (x_i - x'_i)^2``; the peers record it every
``cfg.log_every`` steps (steps 0, L, 2L, ...) into a device buffer, never synchronising inside the loop.
"""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import torch

from ..config import TrainConfig
from ..spec import Population, sample_batch
from .report import PEERS  # noqa: F401  (one list of peer backends)

PRECISIONS = ("ieee", "tf32")


class PeerResult:
    """Final weights and loss history of a peer's training call (tensors or arrays on the device)."""

    def __init__(self, W, b, loss_history, loss_steps):
        self.W, self.b, self.loss_history, self.loss_steps = W, b, loss_history, loss_steps

    def to_cpu(self) -> "PeerResult":
        return PeerResult(*(torch.from_numpy(np.array(a)) if not isinstance(a, torch.Tensor) else a.detach().cpu()
                            for a in (self.W, self.b, self.loss_history)), self.loss_steps)


def loss_steps(cfg: TrainConfig) -> np.ndarray:
    """Steps whose loss the peers record: 0, L, 2L, ... (L = cfg.log_every)."""
    return np.arange(0, cfg.steps, cfg.log_every, dtype=np.int64)


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@contextlib.contextmanager
def torch_matmul_precision(precision: str):
    """float32 matmuls in true fp32 ("ieee") or TF32 ("tf32") on CUDA, restored afterwards."""
    _check_precision(precision)
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# ---------------------------------------------------------------------------------------------------
# torch (eager) and torch.compile
# ---------------------------------------------------------------------------------------------------
class ToyModels(torch.nn.Module):
    """K toy models as one module with an instance axis: x' = act(W^T W x + b) for each model."""

    def __init__(self, W0: torch.Tensor, b0: torch.Tensor, importance: torch.Tensor, relu: bool):
        super().__init__()
        self.W = torch.nn.Parameter(W0.clone())  # [K, m, n]
        self.b = torch.nn.Parameter(b0.clone())  # [K, n]
        self.register_buffer("importance", importance.unsqueeze(1).clone())  # [K, 1, n]
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-model loss (K,) for a batch x [K, B, n]."""
        h = torch.bmm(x, self.W.transpose(1, 2))  # [K, B, m]
        z = torch.baddbmm(self.b.unsqueeze(1), h, self.W)  # [K, B, n]
        y = torch.relu(z) if self.relu else z
        return (self.importance * (y - x).square()).mean(dim=(1, 2))


class TorchPeer:
    """Eager PyTorch: module with an instance axis, autograd, torch.optim.AdamW, torch.rand data."""

    name = "torch"

    def __init__(self, pop: Population, cfg: TrainConfig, device="cpu", precision: str = "ieee",
                 batches: str = "random", seed: int = 0, fused: bool | None = None):
        self.device = torch.device(device)
        self.precision = _check_precision(precision)
        if batches not in ("random", "reference"):
            raise ValueError(f"batches must be 'random' or 'reference', got {batches!r}")
        self.pop, self.cfg, self.batches, self.seed = pop, cfg, batches, seed
        self.K, self.n = len(pop), pop.spec.n_features
        self.W0 = pop.W.to(self.device)
        self.b0 = pop.b.to(self.device)
        self.p = pop.feature_probability.to(torch.float32).to(self.device).unsqueeze(1)  # [K, 1, n]
        self.model = ToyModels(self.W0, self.b0, pop.importance.to(self.device), pop.spec.activation == "relu")
        self.lr = cfg.lr_at()
        self.constant_lr = bool(np.all(self.lr == self.lr[0]))
        torch.manual_seed(seed)  # torch.rand draws from the global generator (what compiled code supports)
        if fused is None:  # the single-kernel AdamW on CUDA; foreach (torch's default) elsewhere
            fused = self.device.type == "cuda"
        self.fused = fused
        self.opt = self._make_optimizer()
        self.options = {"fused_adamw": self.fused, "data": "torch.rand" if batches == "random" else "reference"}

    def _make_optimizer(self):
        kw = dict(lr=float(self.lr[0]), betas=self.cfg.betas, eps=self.cfg.eps, weight_decay=self.cfg.weight_decay)
        if self.fused:
            try:
                return torch.optim.AdamW(self.model.parameters(), fused=True, **kw)
            except (RuntimeError, ValueError):  # no fused kernel for this device / build
                self.fused = False
        return torch.optim.AdamW(self.model.parameters(), foreach=True, **kw)

    def _reset(self):
        """Initial weights, zero optimizer state (tensors kept in place: compiled graphs hold them)."""
        with torch.no_grad():
            self.model.W.copy_(self.W0)
            self.model.b.copy_(self.b0)
            for state in self.opt.state.values():
                for value in state.values():
                    if isinstance(value, torch.Tensor):
                        value.zero_()

    def sample(self) -> torch.Tensor:
        """A batch [K, B, n] from the library's distribution with torch's RNG: one uniform per feature."""
        u = torch.rand(self.K, self.cfg.batch_size, self.n, device=self.device)
        return torch.where(u < self.p, u / self.p, torch.zeros((), device=self.device))

    def _batch(self, t: int):
        if self.batches == "reference":
            return sample_batch(self.pop, t, self.cfg.batch_size, device=self.device)
        return None  # drawn inside the step

    def _set_lr(self, t: int):
        if not self.constant_lr:
            for group in self.opt.param_groups:
                group["lr"] = float(self.lr[t])

    def step(self, x):
        """One training step; returns the per-model loss (K,) of this step's batch."""
        loss = self.model(self.sample() if x is None else x)
        loss.sum().backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()

    def train(self) -> PeerResult:
        """A whole training run of cfg.steps steps from the initial weights (asynchronous on CUDA)."""
        cfg = self.cfg
        self._reset()
        logged = loss_steps(cfg)
        history = torch.empty(len(logged), self.K, device=self.device)
        with torch_matmul_precision(self.precision):
            for t in range(cfg.steps):
                self._set_lr(t)
                loss = self.step(self._batch(t))
                if t % cfg.log_every == 0:
                    history[t // cfg.log_every] = loss
        return PeerResult(self.model.W.detach(), self.model.b.detach(), history.T, logged)


class TorchCompilePeer(TorchPeer):
    """The same step with the data draw + forward + backward and optimizer.step under torch.compile."""

    name = "torch-compile"

    def __init__(self, pop, cfg, device="cpu", precision="ieee", batches="random", seed=0, mode=None):
        self.mode = mode or ("reduce-overhead" if torch.device(device).type == "cuda" else "default")
        self.fallback = None
        super().__init__(pop, cfg, device, precision, batches, seed, fused=False)
        self._compile()

    def _make_optimizer(self):
        # A schedule changes lr every step: as a tensor it does not recompile (torch's compiled-optimizer
        # recipe); a constant lr stays a float. foreach/capturable are left to torch under compile.
        lr = float(self.lr[0]) if self.constant_lr else torch.tensor(float(self.lr[0]))
        return torch.optim.AdamW(self.model.parameters(), lr=lr, betas=self.cfg.betas, eps=self.cfg.eps,
                                 weight_decay=self.cfg.weight_decay)

    def _compile(self):
        torch._dynamo.reset()  # shapes differ between workloads; start each peer from a clean cache
        model, opt = self.model, self.opt

        def loss_random():
            loss = model(self.sample())
            return loss.sum(), loss.detach()

        def loss_given(x):
            loss = model(x)
            return loss.sum(), loss.detach()

        def opt_step():
            opt.step()

        kw = dict(dynamic=False) if self.mode == "default" else dict(dynamic=False, mode=self.mode)
        # compilation happens at the first call, inside train()'s precision context (the TF32 flag)
        self._loss_random = torch.compile(loss_random, **kw)
        self._loss_given = torch.compile(loss_given, **kw)
        self._opt_step = torch.compile(opt_step, **kw)
        self.cudagraphs = self.mode == "reduce-overhead" and self.device.type == "cuda"
        self.options = {**self.options, "fused_adamw": False, "compile_mode": self.mode,
                        "compile_fallback": self.fallback}

    def _set_lr(self, t: int):
        if not self.constant_lr:
            for group in self.opt.param_groups:
                group["lr"].fill_(float(self.lr[t]))

    def step(self, x):
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        total, loss = self._loss_random() if x is None else self._loss_given(x)
        total.backward()
        self._opt_step()
        self.opt.zero_grad(set_to_none=True)
        return loss  # a CUDA graph output: train() copies it (stream-ordered) before the next replay

    def close(self):
        """Drop the compiled graphs (and their CUDA-graph memory pools) before the next backend runs."""
        self._loss_random = self._loss_given = self._opt_step = None
        torch._dynamo.reset()

    def train(self) -> PeerResult:
        from torch._dynamo.utils import counters
        skips = counters["inductor"]["cudagraph_skips"]
        try:
            result = super().train()
        except Exception as err:  # noqa: BLE001 - CUDA graphs are the fragile part; the default mode is not
            if self.mode == "default" or isinstance(err, torch.cuda.OutOfMemoryError):
                raise
            self.fallback = f"{self.mode} failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            self.mode = "default"
            self.opt = self._make_optimizer()
            self._compile()
            result = super().train()
        # graphs inductor compiled but could not capture as CUDA graphs (it logs why; the row records how many)
        self.options["cudagraph_skips"] = self.options.get("cudagraph_skips", 0) + \
            counters["inductor"]["cudagraph_skips"] - skips
        return result


# ---------------------------------------------------------------------------------------------------
# JAX
# ---------------------------------------------------------------------------------------------------
def jax_available() -> bool:
    """Whether JAX is installed (without importing it: _import_jax sets its memory options first)."""
    import importlib.util
    return importlib.util.find_spec("jax") is not None


def _import_jax():
    # Share the GPU with torch in one process: no 75% preallocation, memory given back after each call.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("XLA_PYTHON_CLIENT_ALLOCATOR", "platform")
    import jax
    return jax


class JaxPeer:
    """vmap over models, jit, lax.scan over steps; AdamW by hand with torch.optim.AdamW's formula."""

    name = "jax"

    def __init__(self, pop: Population, cfg: TrainConfig, device="cpu", precision: str = "ieee",
                 batches: str = "random", seed: int = 0, prng_impl: str = "rbg"):
        jax = _import_jax()
        import jax.numpy as jnp
        from jax import lax

        self.jax = jax
        self.precision = _check_precision(precision)
        if batches not in ("random", "reference"):
            raise ValueError(f"batches must be 'random' or 'reference', got {batches!r}")
        platform = "gpu" if torch.device(device).type == "cuda" else "cpu"
        self.jdevice = jax.devices(platform)[0]
        self.pop, self.cfg, self.batches = pop, cfg, batches
        K, n, B = len(pop), pop.spec.n_features, cfg.batch_size
        relu = pop.spec.activation == "relu"
        # ieee: true fp32 products; tf32: JAX's DEFAULT, which is TF32 on Ampere and later GPUs.
        prec = lax.Precision.HIGHEST if precision == "ieee" else lax.Precision.DEFAULT
        b1, b2 = cfg.betas
        eps, L = cfg.eps, cfg.log_every
        put = lambda a: jax.device_put(np.asarray(a), self.jdevice)  # noqa: E731
        self.W0, self.b0 = put(pop.W.numpy()), put(pop.b.numpy())
        imp = put(pop.importance.numpy())
        p = put(pop.feature_probability.to(torch.float32).numpy()[:, None, :])  # [K, 1, n]
        consts = put(cfg.adamw_constants().numpy())  # [steps, 5]: the library's per-step AdamW table
        steps_idx = put(np.arange(cfg.steps, dtype=np.int32))
        try:
            key = jax.random.key(seed, impl=prng_impl)
        except Exception:  # noqa: BLE001 - older JAX: the default (threefry) generator
            prng_impl = "threefry2x32"
            key = jax.random.key(seed)
        self.options = {"prng_impl": prng_impl, "matmul_precision": str(prec),
                        "data": "jax.random" if batches == "random" else "reference"}

        def loss_one(W, b, x, imp_k):  # one model: W [m, n], b [n], x [B, n], imp_k [n]
            h = jnp.matmul(x, W.T, precision=prec)  # [B, m]
            z = jnp.matmul(h, W, precision=prec) + b  # [B, n]
            y = jnp.maximum(z, 0.0) if relu else z
            return jnp.mean(imp_k * jnp.square(y - x))

        value_and_grad = jax.vmap(jax.value_and_grad(loss_one, argnums=(0, 1)))

        def adamw(param, grad, m, v, c):  # torch.optim.AdamW's update with the library's constants
            decay, step_size, bc2_sqrt = c[0], c[1], c[2]
            param = param * decay
            m = b1 * m + (1.0 - b1) * grad
            v = b2 * v + (1.0 - b2) * grad * grad
            return param - step_size * (m / (jnp.sqrt(v) / bc2_sqrt + eps)), m, v

        def sample(t):
            u = jax.random.uniform(jax.random.fold_in(key, t), (K, B, n), dtype=jnp.float32)
            return jnp.where(u < p, u / p, 0.0)

        def one_step(carry, inputs):
            (W, b, mW, mb, vW, vb), first_loss = carry
            c, t, x = inputs
            x = sample(t) if x is None else x
            loss, (gW, gb) = value_and_grad(W, b, x, imp)
            W, mW, vW = adamw(W, gW, mW, vW, c)
            b, mb, vb = adamw(b, gb, mb, vb, c)
            first_loss = jnp.where(t % L == 0, loss, first_loss)
            return ((W, b, mW, mb, vW, vb), first_loss), None

        def chunk(state, inputs):  # up to L steps; returns the loss of its first step (a multiple of L)
            (state, first_loss), _ = lax.scan(one_step, (state, jnp.zeros((K,), jnp.float32)), inputs)
            return state, first_loss

        q, r = divmod(cfg.steps, L)

        def train(W0, b0, consts, steps_idx, xs):
            state = (W0, b0, jnp.zeros_like(W0), jnp.zeros_like(b0), jnp.zeros_like(W0), jnp.zeros_like(b0))
            inputs = (consts, steps_idx, xs)
            head = jax.tree_util.tree_map(lambda a: a[:q * L].reshape(q, L, *a.shape[1:]), inputs)
            state, history = lax.scan(chunk, state, head)  # history [q, K]
            if r:
                state, last = chunk(state, jax.tree_util.tree_map(lambda a: a[q * L:], inputs))
                history = jnp.concatenate([history, last[None]], axis=0)
            return state[0], state[1], history.T

        if batches == "reference":
            xs = put(np.stack([sample_batch(pop, t, B).numpy() for t in range(cfg.steps)]))  # [steps, K, B, n]
        else:
            xs = None
        self.args = (self.W0, self.b0, consts, steps_idx, xs)
        self.compiled = jax.jit(train).lower(*self.args).compile()

    def train(self) -> PeerResult:
        W, b, history = self.compiled(*self.args)
        return PeerResult(W, b, history, loss_steps(self.cfg))

    def block(self, result: PeerResult) -> None:
        self.jax.block_until_ready((result.W, result.b, result.loss_history))

    def compiled_peak_bytes(self) -> int | None:
        """Device memory the compiled program needs (XLA's own account: arguments, outputs, temporaries)."""
        try:
            ma = self.compiled.memory_analysis()
        except Exception:  # noqa: BLE001 - not every backend reports it
            return None
        if ma is None:
            return None
        peak = getattr(ma, "peak_memory_in_bytes", 0)
        if peak:
            return int(peak)
        return int(ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
                   - ma.alias_size_in_bytes)


# ---------------------------------------------------------------------------------------------------
def make_peer(name: str, pop: Population, cfg: TrainConfig, device="cpu", precision: str = "ieee",
              batches: str = "random", **options):
    """A peer trainer by name: "torch", "torch-compile" or "jax"."""
    if name == "torch":
        return TorchPeer(pop, cfg, device, precision, batches, **options)
    if name == "torch-compile":
        return TorchCompilePeer(pop, cfg, device, precision, batches, **options)
    if name == "jax":
        return JaxPeer(pop, cfg, device, precision, batches, **options)
    raise ValueError(f"peer must be one of {', '.join(PEERS)}, got {name!r}")


def train_peer(name: str, pop: Population, cfg: TrainConfig, device="cpu", precision: str = "ieee",
               batches: str = "reference", **options) -> PeerResult:
    """Train with a peer and return CPU tensors. batches="reference" feeds sp.sample_batch's stream."""
    peer = make_peer(name, pop, cfg, device, precision, batches, **options)
    t0 = time.perf_counter()
    result = peer.train()
    if isinstance(peer, JaxPeer):
        peer.block(result)
    result = result.to_cpu()
    result.seconds = time.perf_counter() - t0
    return result
