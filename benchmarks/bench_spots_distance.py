"""Local capped taxicab distance map vs scipy.ndimage.distance_transform_cdt.

Prints the time of each on a 3072 x 3072 spot mask (about 0.5 % spot pixels,
spots of 1-20 pixels), their ratio, and that the capped maps agree exactly.
With CUDA, also the torch version on the GPU.

Usage::

    python benchmarks/bench_spots_distance.py [--size 3072] [--cap 8] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from napari_xrd.core.spots.distance_map import local_distance_map, local_distance_map_torch


def spot_mask(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), bool)
    n = int(size * size * 0.005 / 6)
    ys, xs = rng.integers(0, size, (2, n))
    mask[ys, xs] = True
    return ndimage.binary_dilation(mask, iterations=1) | ndimage.binary_dilation(
        mask & (rng.random(mask.shape) < 0.2), iterations=2
    )


def best_of(fn, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), float(np.median(ts)), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=3072)
    p.add_argument("--cap", type=int, default=8)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    mask = spot_mask(args.size)
    print(f"mask {args.size} x {args.size}, {mask.mean() * 100:.2f} % spot pixels, cap {args.cap}")
    b_ref, m_ref, ref = best_of(lambda: ndimage.distance_transform_cdt(~mask, metric="taxicab"), args.repeat)
    b_us, m_us, ours = best_of(lambda: local_distance_map(mask, max_distance=args.cap), args.repeat)
    exact = bool(np.array_equal(ours, np.minimum(ref, args.cap)))
    print(f"scipy distance_transform_cdt(taxicab): best {b_ref * 1e3:7.1f} ms, median {m_ref * 1e3:7.1f} ms")
    print(f"local_distance_map (bit-packed):       best {b_us * 1e3:7.1f} ms, median {m_us * 1e3:7.1f} ms")
    print(f"speed-up: best {b_ref / b_us:.1f}x, median {m_ref / m_us:.1f}x; exact up to the cap: {exact}")
    import torch

    t_mask = torch.from_numpy(mask)
    b_t, m_t, out_t = best_of(lambda: local_distance_map_torch(t_mask, max_distance=args.cap), args.repeat)
    print(f"torch version on the CPU:              best {b_t * 1e3:7.1f} ms (exact: "
          f"{bool(np.array_equal(out_t.numpy(), ours))})")
    if torch.cuda.is_available():
        g = t_mask.cuda()
        local_distance_map_torch(g, max_distance=args.cap)
        torch.cuda.synchronize()

        def run():
            r = local_distance_map_torch(g, max_distance=args.cap)
            torch.cuda.synchronize()
            return r

        b_g, m_g, out_g = best_of(run, args.repeat)
        print(f"torch version on {torch.cuda.get_device_name()}: best {b_g * 1e3:7.2f} ms "
              f"({b_ref / b_g:.0f}x scipy; exact: {bool(np.array_equal(out_g.cpu().numpy(), ours))})")
    else:
        print("no CUDA GPU: GPU path not measured")


if __name__ == "__main__":
    main()
