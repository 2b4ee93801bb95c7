"""What an ideal spot detector could reach on the spot benchmark's frames: a reference for its targets.

The frames are those of ``bench_spots.py`` (held-out full-size Pilatus 6M
stills).  The "oracle" detector is given what no real finder has: the
simulator's noise-free expected background of each frame (water ring, ice
rings, spotty ice grains included) and the typical spot width.  At every
pixel it sums the counts in a square aperture about one spot's width and
asks how unlikely that sum is for Poisson counts of the known background
(the significance ``z`` of the upper tail); local maxima of ``z`` above a
threshold are its spots.  It is scored as ``bench_spots.py`` scores the
finders (recall of true spots with SNR >= 5, precision within 3 px; no ice
treatment, as it is not fooled by ice it knows).

Since the spots' SNR is the ideal (matched-filter) SNR of the simulator,
a spot at SNR 5 is found at threshold ``t`` with a chance of about
``Φ(5 - t)``, while noise alone passes ``t`` in a fraction ``1 - Φ(t)`` of
the independent apertures (hundreds of thousands per frame).  The table
shows where that trade-off leaves recall at a given precision.  It is a
bound for aperture photometry with a perfect background, not for every
conceivable detector: a profile-weighted filter gains a few tenths of a
standard deviation.

Usage::

    python benchmarks/bench_spots_bound.py [--frames 12] [--no-ice-frames 4]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

THRESHOLDS = (3.0, 4.0, 4.5, 4.75, 5.0, 5.5, 6.0, 8.0)


def poisson_significance(counts, mu):
    """One-sided z of the Poisson upper tail ``P(N >= counts | mu)`` (normal quantile)."""
    from scipy import special, stats

    # P(N >= n) = regularised lower incomplete gamma P(n, mu) for n >= 1
    n = np.maximum(np.rint(counts), 0.0)
    p = np.where(n >= 1, special.gammainc(np.maximum(n, 1.0), np.maximum(mu, 1e-12)), 1.0)
    return stats.norm.isf(np.clip(p, 1e-300, 1.0))


def oracle_spots(image, background, valid, *, sigma_px, gain=1.0, offset=0.0, z_min=3.0):
    """Local maxima of aperture significance; returns ``(fast, slow)`` (corner convention) and their z."""
    from scipy import ndimage as ndi

    size = max(3, 2 * int(round(1.5 * sigma_px)) + 1)
    counts = np.where(valid, (image.astype(np.float64) - offset) / gain, 0.0)
    mu = np.where(valid, background.astype(np.float64), 0.0)
    n_sum = ndi.uniform_filter(counts, size) * size**2
    mu_sum = ndi.uniform_filter(mu, size) * size**2
    z = poisson_significance(n_sum, mu_sum)
    # maxima of the excess over its noise (z saturates for strong spots: plateaus, many maxima)
    excess = np.where(valid, (n_sum - mu_sum) / np.sqrt(mu_sum + 1.0), -np.inf)
    peak = (excess == ndi.maximum_filter(excess, size=size)) & valid & (z >= z_min)
    rr, cc = np.nonzero(peak)
    return np.column_stack([cc + 0.5, rr + 0.5]), z[rr, cc]


def main(argv=None):
    import bench_spots as B

    from napari_xrd.core.simulate.pipeline import simulate_from_params
    from napari_xrd.core.spots.metrics import spot_scores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=12, help="ice-ring frames (as bench_spots.py)")
    ap.add_argument("--no-ice-frames", type=int, default=4)
    args = ap.parse_args(argv)

    rows = []
    for label, still in B._frames(args.frames, args.no_ice_frames):
        full = simulate_from_params(still.params, keep_background=True)
        if not np.array_equal(full.image, still.image):
            raise RuntimeError(f"{label}: regenerated frame differs from the benchmark's")
        p = still.params["params"]
        sp = still.spots
        strong = (sp["snr"] >= 5) & sp["in_mask"]
        sigma = float(np.median(np.sqrt(sp["sigma_major"] * sp["sigma_minor"])[strong])) if strong.any() else 1.0
        xy, z = oracle_spots(still.image, full.background, still.pixel_mask == 0, sigma_px=sigma,
                             gain=p["gain"], offset=p["offset"], z_min=min(THRESHOLDS))
        true_xy = np.column_stack([sp["fast"], sp["slow"]])
        scores = {t: spot_scores(xy[z >= t], true_xy, radius=3.0, true_weight=strong) for t in THRESHOLDS}
        snr5 = strong & (sp["snr"] < 6)
        rows.append({"label": label, "kind": B._ice_kind(still), "scores": scores})
        print(f"  {label:9s} ({rows[-1]['kind']:7s}) {int(strong.sum()):5d} spots SNR>=5 ({int(snr5.sum())} below 6), "
              f"spot σ {sigma:.2f} px, median background {np.median(full.background[still.pixel_mask == 0]):.2f} ph/px | "
              + " ".join(f"t{t:g}: R {s['recall']:.3f} P {s['precision']:.3f}" for t, s in scores.items()), flush=True)

    print(f"\nOracle (true background, Poisson aperture significance), mean over {len(rows)} frames:")
    print(f"{'threshold z':>12} {'recall(SNR>=5)':>15} {'precision':>10} {'F1':>7}   recall / precision without spotty ice")
    for t in THRESHOLDS:
        s = [r["scores"][t] for r in rows]
        ns = [r["scores"][t] for r in rows if r["kind"] != "spotty"]
        rec, prec = np.mean([x["recall"] for x in s]), np.mean([x["precision"] for x in s])
        f1 = np.mean([x["f1"] for x in s])
        print(f"{t:>12.1f} {rec:>15.4f} {prec:>10.4f} {f1:>7.4f}   "
              f"{np.mean([x['recall'] for x in ns]):.4f} / {np.mean([x['precision'] for x in ns]):.4f}")
    best = [t for t in THRESHOLDS if np.mean([r["scores"][t]["precision"] for r in rows]) >= 0.95]
    if best:
        t = min(best)
        rec = np.mean([r["scores"][t]["recall"] for r in rows])
        print(f"\nLowest threshold with mean precision >= 0.95: z = {t:g}, recall {rec:.4f} "
              f"(a spot at SNR 5 passes it with a chance of about {0.5 * math.erfc((t - 5) / math.sqrt(2)):.2f})")


if __name__ == "__main__":
    main()
