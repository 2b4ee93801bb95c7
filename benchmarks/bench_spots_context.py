"""Do ice grains on a ring cost the U-Net Bragg spots elsewhere in the same tile?

The U-Net judges each 256-pixel tile with channel attention, which pools
over the whole tile: what a tile holds away from a spot can change whether
the spot is found.  On development frames with spotty ice the U-Net missed
more spots far from the ice lines than on frames without (streaks above
all), and on a synthetic frame a dozen bright grains on a ring were enough
to hide streaks 50 pixels away.  This benchmark measures that, on synthetic
Poisson frames (1024 x 1024 pixels of 0.172 mm at 120 mm, 1 Å, flat
background of 3 photons per pixel) that hold:

- Bragg spots away from every ice line (at least 0.015 Å⁻¹ in 1/d): 40
  compact ones (σ 1 px, 150 photons) and 40 streaks along the azimuth
  (σ 3.5 x 1.2 px, 500 photons);
- N ice grains (σ 1 px, 300 photons) on the 3.90 Å line at random azimuths,
  N = 0, 10, 30, 100.

It prints, per N, the recall (within 3 px) of each kind of Bragg spot for
the U-Net (``ice_rings="keep"``: nothing dropped; ``large_spots="off"``;
``ice_context`` as ``--ice-context``: "auto" takes the second look of
:mod:`napari_xrd.core.spots.ice_context` on frames it finds spotty, "off"
shows the network alone) and, as the reference that has no such context,
for the dispersion finder; means over ``--seeds`` frames.  Nothing is
asserted.

Usage::

    python benchmarks/bench_spots_context.py [--seeds 4] [--model default] [--ice-context auto|on|off]
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.spots import ICE_RING_D, find_spots
from napari_xrd.core.spots.ice import ice_line_distance
from napari_xrd.core.spots.metrics import match_spots

GEOMETRY = DetectorGeometry(shape=(1024, 1024), pixel_size=0.172, distance=120.0, beam_center=(512.0, 512.0),
                            wavelength=1.0)
GRAIN_COUNTS = (0, 10, 30, 100)


def _blob(lam, xx, yy, x, y, photons, sigma_azimuthal, sigma_radial):
    """Add a Gaussian spot to ``lam``, its axes along the azimuth and the radius about the beam centre."""
    a = np.arctan2(y - GEOMETRY.beam_center[1], x - GEOMETRY.beam_center[0])
    r = (xx - x) * np.cos(a) + (yy - y) * np.sin(a)
    t = -(xx - x) * np.sin(a) + (yy - y) * np.cos(a)
    lam += photons / (2 * np.pi * sigma_azimuthal * sigma_radial) * np.exp(
        -0.5 * ((t / sigma_azimuthal) ** 2 + (r / sigma_radial) ** 2))


def context_frame(seed: int, n_grains: int):
    """One frame: counts, the Bragg spots' ``(fast, slow)`` positions and whether each is a streak."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: GEOMETRY.shape[0], : GEOMETRY.shape[1]] + 0.5
    lam = np.full(GEOMETRY.shape, 3.0)
    positions = []
    while len(positions) < 80:  # away from the edges, the beam and every ice line
        x, y = rng.uniform(40, GEOMETRY.shape[1] - 40, 2)
        d = GEOMETRY.resolution_at(x, y)
        if np.hypot(x - 512, y - 512) > 60 and ice_line_distance([d])[0] >= 0.015:
            if all(np.hypot(x - px, y - py) > 12 for px, py in positions):
                positions.append((x, y))
    streak = np.arange(80) >= 40
    for (x, y), s in zip(positions, streak):
        _blob(lam, xx, yy, x, y, 500.0 if s else 150.0, 3.5 if s else 1.0, 1.2 if s else 1.0)
    radius = GEOMETRY.radius_px_for_d(ICE_RING_D[0])
    grains = np.random.default_rng(seed + 1000)  # the same Bragg spots whatever the number of grains
    for a in grains.uniform(0, 2 * np.pi, n_grains):
        x, y = 512 + radius * np.cos(a), 512 + radius * np.sin(a)
        _blob(lam, xx, yy, x, y, 300.0, 1.0, 1.0)
    image = np.random.default_rng(seed + 2000 + n_grains).poisson(lam).astype(np.float32)
    return image, np.array(positions), streak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=4, help="frames per number of grains (default 4)")
    p.add_argument("--model", default="default")
    p.add_argument("--ice-context", default="auto", choices=["auto", "on", "off"],
                   help="the U-Net's second look with the ice lines left out of its tile statistics (default auto)")
    args = p.parse_args(argv)
    print(f"Recall of Bragg spots away from the ice lines, with N grains on the 3.90 Å line (mean over "
          f"{args.seeds} frames of 40 compact spots and 40 streaks each):")
    print(f"{'N grains':>8} {'U-Net compact':>14} {'U-Net streaks':>14} {'dispersion compact':>19} "
          f"{'dispersion streaks':>19}")
    for n in GRAIN_COUNTS:
        rec = {k: [] for k in ("unet", "dispersion")}
        for seed in range(args.seeds):
            image, truth, streak = context_frame(seed, n)
            for method in rec:
                res = find_spots(image, method=method, geometry=GEOMETRY, model=args.model, device="cpu",
                                 ice_rings="keep", beamstop_shadow="keep", large_spots="off",
                                 **({"ice_context": args.ice_context} if method == "unet" else {}))
                found = match_spots(res.table.fast_slow(), truth)[1]
                rec[method].append((found[~streak].mean(), found[streak].mean()))
        u, d = np.mean(rec["unet"], axis=0), np.mean(rec["dispersion"], axis=0)
        print(f"{n:>8} {u[0]:>14.3f} {u[1]:>14.3f} {d[0]:>19.3f} {d[1]:>19.3f}", flush=True)


if __name__ == "__main__":
    main()
