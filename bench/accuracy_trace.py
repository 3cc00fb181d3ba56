"""Where the triton backend's trajectory parts from a float64 oracle, step by step, beside the float32
reference's (the GPU at-scale test's failing cases; bench/gpu_session.sh's `accuracy` step).

    python bench/accuracy_trace.py --out $OUT/accuracy.jsonl 400,30,64,ieee 400,30,64,tf32x3 200,20,64,ieee

Each case is N,M,K,PRECISION[,split|fused][,sparse][,nofusion]: the population of tests/test_kernels.py's _pop
(densities uniform in [0.05, 1], importances in [0.1, 1]; `sparse`: densities in [0.005, 0.05]; `nofusion`:
the kernels compiled without FMA contraction of their element-wise arithmetic, which the interpreter
never contracts: a GPU-only difference that vanishes with it is the contraction's). For each
step count S (--steps) it trains S steps from the same start three ways - the float64 oracle
(reference.train_torch in float64), the float32 reference (backend torch) and the kernel - and prints
the per-model relative distance ||(W, b) - oracle|| / ||oracle|| (median, 90th percentile, max) of the
kernel and of the reference, and kernel vs reference. At S = 1 it also splits the kernel's first update
by the float64 gradient's size, as the test does: relative error where |g| > 1e-6, and where the
gradient cancels to |g| <= 1e-6 the largest deviation in units of lr and the count beyond 0.05 lr.
--local S0 (default 20) adds one more line per case: the float64 oracle's state after S0 steps, rounded to
float32, is advanced ONE step by each path (resume=), and each path's update is compared with the
oracle's from that same state (relative norm per model): the per-step error at a trained state, free of
the history (the float32 reference's figure is the floor: its weights are rounded to float32).
A distance that grows step by step from the first says the kernel's per-step error is larger than
float32 rounding; one that stays at the reference's level and then jumps says two float32 paths parted at
a ReLU boundary. --device cpu runs it under TRITON_INTERPRET=1 (small cases only); there every tl.dot is
numpy's float32 matmul (BLAS blocking) plus the accumulator, and --fma-dot instead accumulates it as the
GPU's FMA lowering of an ieee tl.dot does: acc = fma(a[:, k], b[k, :], acc) for k in order from the
accumulator passed in (each fma exact in float64, then rounded to float32: a single rounding). --tf32
ROUNDING (default rz; `none`: float32) computes the tf32 dots of tf32 and tf32x3 as TF32 mmas do
(superpos/tf32_emulation.py: truncated operands, each k=8 step rounded rn, rz or rz-aligned): "emulated".
"""
import argparse
import json
import os
import sys


def population(sp, np, n, m, K, sparse):
    g = np.random.default_rng(n * 1000 + m)  # as tests/test_kernels.py's _pop
    p = g.uniform(0.05, 1.0, (K, n))
    imp = g.uniform(0.1, 1.0, (K, n))
    if sparse:
        p = p / 20
    return sp.Population(sp.ModelSpec(n, m, "relu"), feature_probability=p, importance=imp,
                         seed=list(range(K)))


def distances(torch, res, oracle):
    """Per model: ||(W, b) - oracle's|| / ||oracle's||."""
    a = torch.cat([res.W.flatten(1), res.b], 1).double().cpu()
    o = torch.cat([oracle.W.flatten(1), oracle.b], 1).double().cpu()
    return ((a - o).norm(dim=1) / o.norm(dim=1)).numpy()


def first_update(pop, got, grad64, cfg):
    """The kernel's first step split by the float64 gradient's size (see the module's docstring)."""
    W0 = pop.W.double()
    # one AdamW step from zero moments: W (1 - lr wd) - lr g / (|g| + eps)
    want = W0 * (1 - cfg.lr * cfg.weight_decay) - cfg.lr * grad64 / (grad64.abs() + cfg.eps)
    dev = (got.W.double().cpu() - want).abs()
    sure = grad64.abs() > 1e-6
    return {"sure": int(sure.sum()), "unsure": int((~sure).sum()),
            "rel_err_sure": float(dev[sure].norm() / (want[sure] - W0[sure]).norm()),
            "max_dev_unsure_lr": float(dev[~sure].max() / cfg.lr) if (~sure).any() else 0.0,
            "unsure_beyond_0.05lr": int((dev[~sure] > 0.05 * cfg.lr).sum())}


def local_step(sp, torch, np, pop, S0, prec, split, device, batch, overrides=None):
    """Per model: ||update - oracle's update|| / ||oracle's update|| for one step from the oracle's state
    after S0 steps (rounded to float32), for the kernel and the float32 reference."""
    from superpos.checkpoint import TrainCheckpoint
    from superpos.reference import train_torch
    cfg = sp.TrainConfig(steps=S0 + 1, batch_size=batch, log_every=1)
    held = {}
    train_torch(pop, cfg, device=device, dtype=torch.float64,
                checkpoint=lambda step, snap: held.update(ck=snap()) if step == S0 else None)
    ck = held["ck"]
    f32 = lambda d: {k: v.float().cpu() for k, v in d.items()}  # noqa: E731
    start = TrainCheckpoint(S0, f32(ck.params), f32(ck.exp_avg), f32(ck.exp_avg_sq), ck.loss_history.float().cpu())
    W0 = start.params["W"].double()
    oracle = train_torch(pop, cfg, device=device, dtype=torch.float64, resume=start)
    ref = sp.train(pop, cfg, backend="torch", device=device, resume=start)
    got = sp.train(pop, cfg, backend="triton", input_precision=prec, split=split, resume=start,
                   kernel_config=overrides)
    du_o = (oracle.W.double().cpu() - W0).flatten(1)

    def err(res):
        return ((res.W.double().cpu() - W0).flatten(1) - du_o).norm(dim=1) / du_o.norm(dim=1)
    return err(got).numpy(), err(ref).numpy()


def use_sequential_fma_dot():
    """The interpreter's tl.dot as the GPU's FMA lowering computes an ieee dot (see the docstring)."""
    import numpy as np
    from triton.runtime import interpreter

    plain = interpreter.InterpreterBuilder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.data.dtype != np.float32 or b.data.dtype != np.float32:
            return plain(self, a, b, d, input_precision, max_num_imprecise_acc)
        acc = np.array(d.data, dtype=np.float32)
        A, B = a.data.astype(np.float64), b.data.astype(np.float64)
        for k in range(A.shape[-1]):
            acc = (acc + A[..., :, k:k + 1] * B[..., k:k + 1, :]).astype(np.float32)
        return interpreter.TensorHandle(acc, d.dtype.scalar)
    interpreter.InterpreterBuilder.create_dot = create_dot


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="+", help="N,M,K,PRECISION[,split|fused][,sparse][,nofusion]")
    p.add_argument("--steps", default="1,5,20,50", help="step counts (comma-separated)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default="cuda")
    p.add_argument("--local", type=int, default=20, help="the trained state's step for the one-step check (0: none)")
    p.add_argument("--fma-dot", action="store_true", help="--device cpu: tl.dot as the GPU's sequential FMA")
    p.add_argument("--tf32", default="rz", choices=("rn", "rz", "rz-aligned", "none"),
                   help="--device cpu: tf32 dots emulated with this rounding (none: the interpreter's float32)")
    p.add_argument("--out", help="append one JSON line per case and step count")
    args = p.parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    import numpy as np
    import torch

    if args.device == "cpu":
        from superpos.interpreter_args import interpret_as_a_gpu_launch
        interpret_as_a_gpu_launch()  # float arguments as float32 scalars, as on a GPU; the interpreter's repeats skipped
    if args.fma_dot:
        use_sequential_fma_dot()
    if args.device == "cpu":
        from superpos.tf32_emulation import emulate_tf32_dots_from_now
        emulate_tf32_dots_from_now(None if args.tf32 == "none" else args.tf32)  # after --fma-dot: wraps it
    import superpos as sp
    from superpos.reference import forward_backward, train_torch
    for case in args.cases:
        f = case.split(",")
        n, m, K, prec = int(f[0]), int(f[1]), int(f[2]), f[3]
        split = {"split": True, "fused": False}.get(next((x for x in f[4:] if x in ("split", "fused")), ""), None)
        sparse = "sparse" in f[4:]
        overrides = {"fp_fusion": False} if "nofusion" in f[4:] else None
        unknown = sorted(set(f[4:]) - {"split", "fused", "sparse", "nofusion"})
        if unknown:
            raise SystemExit(f"case {case}: options must be among split, fused, sparse, nofusion; got {unknown[0]}")
        pop = population(sp, np, n, m, K, sparse)
        for S in [int(s) for s in args.steps.split(",")]:
            cfg = sp.TrainConfig(steps=S, batch_size=args.batch_size, log_every=max(1, S // 5))
            oracle = train_torch(pop, cfg, device=args.device, dtype=torch.float64)
            ref = sp.train(pop, cfg, backend="torch", device=args.device)
            got = sp.train(pop, cfg, backend="triton", input_precision=prec, split=split, kernel_config=overrides)
            e_got, e_ref, e_gr = distances(torch, got, oracle), distances(torch, ref, oracle), distances(torch, got, ref)
            row = {"case": case, "steps": S, "device": (torch.cuda.get_device_name() if args.device == "cuda"
                                                else f"cpu (interpreter, tf32 dots: {args.tf32})"),
                   **{f"{name}_{q}": float(np.quantile(e, v)) for name, e in
                      (("kernel", e_got), ("reference", e_ref), ("kernel_vs_reference", e_gr))
                      for q, v in (("median", 0.5), ("p90", 0.9), ("max", 1.0))}}
            if S == 1:
                x = sp.sample_batch(pop, 0, cfg.batch_size, device=args.device).double()
                _, dW, _ = forward_backward(pop.W.double().to(args.device), pop.b.double().to(args.device), x,
                                            pop.importance.double().to(args.device), True)
                row.update(first_update(pop, got, dW.cpu(), cfg))
            print(f"{case:24s} steps {S:3d}  kernel {row['kernel_median']:.2e} (p90 {row['kernel_p90']:.2e}) "
                  f" reference {row['reference_median']:.2e} (p90 {row['reference_p90']:.2e})  kernel-vs-ref "
                  f"{row['kernel_vs_reference_median']:.2e}"
                  + (f"  first update: rel err {row['rel_err_sure']:.1e} where |g| > 1e-6; {row['unsure']} cancelling, "
                     f"max dev {row['max_dev_unsure_lr']:.3f} lr, {row['unsure_beyond_0.05lr']} beyond 0.05 lr"
                     if S == 1 else ""), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
        if args.local:
            e_got, e_ref = local_step(sp, torch, np, pop, args.local, prec, split, args.device, args.batch_size,
                                      overrides)
            row = {"case": case, "local_step_from": args.local, "kernel_median": float(np.median(e_got)),
                   "kernel_max": float(e_got.max()), "reference_median": float(np.median(e_ref)),
                   "reference_max": float(e_ref.max())}
            print(f"{case:24s} one step from the oracle's step {args.local}: update error kernel "
                  f"{row['kernel_median']:.2e} (max {row['kernel_max']:.2e}), reference {row['reference_median']:.2e} "
                  f"(max {row['reference_max']:.2e})", flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
