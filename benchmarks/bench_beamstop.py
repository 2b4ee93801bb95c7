"""The beamstop's disc: where find_beamstop puts it, against where the simulator drew it.

Frames: :func:`napari_xrd.core.simulate.random_still` at full size (Pilatus
6M and EIGER 16M), realistic and flat backgrounds in turn, always with a
beamstop (disc radius 0.8–2.5 mm, arm 0.6–2 mm wide in a random direction,
disc 0.15 mm (1σ) off the beam), true beam centre within ±3 mm of the
detector's middle, which is where the search starts (as from a header).
Both detectors' middles are module gaps, so many discs are partly hidden.

For each frame: whether a disc was found, the distance from the fitted
centre to the drawn disc's centre, the reported 1-σ (per axis), which fit
answered ("likelihood" or "traced edge"), the share of the disc on measured
pixels, and the wall-clock time of :func:`find_beamstop`.  The summary gives
the share found, the median and 95th percentile of the error, and how often
the error lies within 3σ (of a 2-D normal: 98.9 %), for discs at least half
visible and for the rest.

Usage::

    python benchmarks/bench_beamstop.py [--n 8] [--seed 4242]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from bench_beam_center import masked_fraction

from napari_xrd.core.beam_center.beamstop import find_beamstop
from napari_xrd.core.simulate import random_still

SEARCH_MM = 15.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="frames per detector")
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    rows = []
    print(f"{'detector':10s} {'style':10s} {'visible':>7s} {'found':>6s} {'err px':>7s} {'σ px':>6s} {'fit':12s} {'s':>5s}")
    for det in ("pilatus6m", "eiger16m"):
        for i in range(args.n):
            style = ("realistic", "flat")[i % 2]
            s = random_still(rng, detector=det, shape=None, anomalies="none", style=style, beamstop=True,
                             beam_center_range_mm=3.0, max_tilt_deg=3.0)
            g, p = s.geometry, s.params["params"]
            disc = (g.beam_center[0] + p["beamstop_offset_px"][0], g.beam_center[1] + p["beamstop_offset_px"][1])
            radius = p["beamstop_radius_mm"] / g.pixel_size
            valid = s.pixel_mask == 0
            visible = 1.0 - masked_fraction(s.pixel_mask, disc, radius)
            t0 = time.perf_counter()
            bs = find_beamstop(s.image, valid, pixel_size=g.pixel_size, near=(g.shape[1] / 2, g.shape[0] / 2),
                               search_radius_px=SEARCH_MM / g.pixel_size)
            dt = time.perf_counter() - t0
            row = {"det": det, "visible": visible, "found": bs is not None, "seconds": dt}
            if bs is not None:
                row.update(err=math.dist(bs["beam_center_px"], disc), sigma=bs["center_sigma_px"], fit=bs["fit"])
            rows.append(row)
            print(f"{det:10s} {style:10s} {visible:7.2f} {str(row['found']):>6s} "
                  + (f"{row['err']:7.2f} {row['sigma']:6.2f} {row['fit']:12s}" if bs is not None else f"{'':28s}")
                  + f" {dt:5.2f}", flush=True)

    def summary(name, sel):
        if not sel:
            return
        found = [r for r in sel if r["found"]]
        line = f"  {name:28s} n={len(sel):3d}  found {len(found):3d}"
        if found:
            e = np.array([r["err"] for r in found])
            z = e / np.sqrt(2) / np.maximum([r["sigma"] for r in found], 1e-9)  # per-axis σ
            line += (f"  err median {np.median(e):6.2f}  p95 {np.percentile(e, 95):6.2f} px"
                     f"  within 3σ {np.mean(z <= 3):5.2f}")
        line += f"  time median {np.median([r['seconds'] for r in sel]):5.2f} s"
        print(line)

    print("\nSummary (error: fitted disc centre to the drawn disc's centre)")
    summary("all", rows)
    for det in ("pilatus6m", "eiger16m"):
        summary(det, [r for r in rows if r["det"] == det])
    summary("disc at least half visible", [r for r in rows if r["visible"] >= 0.5])
    summary("disc mostly hidden", [r for r in rows if r["visible"] < 0.5])


if __name__ == "__main__":
    main()
