"""CPU figures for the reference path (issue: foundation). Run: python bench/cpu_reference.py

1. one training step of 16 models of n=400, m=30 at batch 1024: batch generation vs forward+backward
2. the intro experiment (10 models, n=5, m=2, 10,000 steps) end to end with the torch backend
"""
import time

import numpy as np
import torch

import superpos as sp
from superpos.reference import forward_backward


def median_time(fn, repeats=7):
    fn()  # warm-up (numba compiles on first use)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    pop = sp.Population(sp.ModelSpec(400, 30), feature_probability=0.05, seed=list(range(16)))
    x = sp.sample_batch(pop, 0, 1024)
    t_data = median_time(lambda: sp.sample_batch(pop, 3, 1024))
    t_fb = median_time(lambda: forward_backward(pop.W, pop.b, x, pop.importance, True))
    print(f"n=400 m=30 K=16 B=1024, torch threads={torch.get_num_threads()}: "
          f"batch generation {t_data * 1e3:.1f} ms, forward+backward {t_fb * 1e3:.1f} ms, ratio {t_data / t_fb:.2f}")
    intro = sp.Population(sp.ModelSpec(5, 2), feature_probability=20 ** -np.linspace(0, 1, 10),
                          importance=0.9 ** np.arange(5), seed=0)
    t = time.perf_counter()
    sp.train(intro, sp.TrainConfig(steps=10_000), backend="torch")
    print(f"intro (K=10, n=5, m=2, 10,000 steps, batch 1024): {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
