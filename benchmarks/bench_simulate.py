"""Simulator figures: speed, and realism measured against the real ADSC frame.

Run::

    python benchmarks/bench_simulate.py [--n 60] [--skip-realism]

Prints
1. random 512 x 512 training stills per second, in one process and with 2
   worker processes (simulation only), and through ``write_simulated_dataset``
   (simulation + writing the dataset format, 2 workers);
2. seconds for a full-size Pilatus 6M still with its truth
   (:func:`sample_pilatus_still`) and for a random full-size EIGER 16M;
3. realism: the real ADSC Quantum-4 lysozyme frame (sample_data/) against
   simulated frames with the same geometry (ADSC Q4, 250 mm, 1.0 Å, beam centre
   (1160.5, 1216.9) px, 1° oscillation) and the lysozyme cell in several random
   orientations: median background per resolution shell, pixel noise and its
   neighbour correlation, and per-shell count, median size (pixels) and
   median background-subtracted intensity (ADU) of the spots found by the same
   DIALS-style dispersion finder on both.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "sample_data" / "adsc_q4_lysozyme_2002.img.bz2"
SHELLS = [100.0, 8.0, 5.0, 4.0, 3.5, 3.0, 2.6, 2.3, 2.0]

#: simulation settings for the ADSC frame, tuned from the measurements printed below
ADSC_SETTINGS = dict(
    d_min=1.5,
    oscillation_deg=1.0,
    mosaicity_deg=0.1,
    intensity_scale=40.0,
    spot_sigma_mm=0.03,
    psf_px=0.3,
    gain=2.0,  # ADU per photon  } these three reproduce the real frame's background noise
    read_noise=2.0,  # ADU        } (4.8 ADU at 40 ADU above the pedestal) and its
    ccd_psf_px=0.6,  # pixels     } neighbour correlation (0.36)
    offset=40.0,  # ADU pedestal (darkest unshadowed pixels)
    solvent_photons=16.0,
    solvent_falloff_d=2.4,
    air_photons=1.4,
    saturation=65535.0,
    marker_values=False,
    beamstop_radius_mm=5.5,
    beamstop_arm_angle_deg=90.0,
)
ADSC_WILSON_B = 8.0
ADSC_RING = {"background_ring": {"photons": 21.0, "d": 3.45, "sigma_s": 0.04}}


def _one(seed):
    from napari_xrd.core.simulate import random_still

    st = random_still(seed, shape=(512, 512))
    return st.image.shape


def bench_speed(n: int) -> None:
    from napari_xrd.core.simulate import random_still, sample_pilatus_still
    from napari_xrd.core.simulate.generate import write_simulated_dataset

    print("== speed (2-core machine shared with other jobs; load average %.1f) ==" % os.getloadavg()[0])
    for s in range(3):
        random_still(10_000 + s, shape=(512, 512))  # warm caches and imports
    t = time.perf_counter()
    c = time.process_time()
    for s in range(n):
        random_still(s, shape=(512, 512))
    single = n / (time.perf_counter() - t)
    single_cpu = n / (time.process_time() - c)
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_one, range(4))
        t = time.perf_counter()
        pool.map(_one, range(n), chunksize=2)
        double = n / (time.perf_counter() - t)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_simulated_dataset(Path(tmp) / "ds", n, seed=1, workers=2, shape=(512, 512))
        written = n / (time.perf_counter() - t)
        size = sum(p.stat().st_size for p in (Path(tmp) / "ds" / "shards").glob("*.h5")) / n / 1e6
    print(f"random_still 512x512, 1 process : {single:6.1f} images/s  ({n} images, all options random; "
          f"{single_cpu:.1f} images per CPU-second, i.e. without the other jobs on the machine)")
    print(f"random_still 512x512, 2 workers : {double:6.1f} images/s  (ratio to 1 process {double / single:.2f})")
    print(f"simulate + write dataset, 2 wkrs: {written:6.1f} images/s  ({size:.2f} MB per example on disk)")

    times = []
    for s in range(3):
        t = time.perf_counter()
        st = sample_pilatus_still(s)
        times.append(time.perf_counter() - t)
    print(f"full Pilatus 6M 2527x2463 with truth (sample_pilatus_still): median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}); {int(st.spots['in_mask'].sum())} qualified spots, "
          f"{100 * st.spot_mask.mean():.2f} % spot pixels")
    times = []
    for s in range(2):
        t = time.perf_counter()
        st = random_still(s, detector="eiger16m", shape=None, style="realistic")
        times.append(time.perf_counter() - t)
    print(f"full EIGER 16M 4371x4150, random still:                 median {statistics.median(times):.2f} s")


def _shell_index(d):
    idx = np.full(d.shape, -1)
    for k, (a, b) in enumerate(zip(SHELLS[:-1], SHELLS[1:])):
        idx[(d < a) & (d >= b)] = k
    return idx


def _measure(image, geometry, pixel_mask, valid):
    from scipy.ndimage import median_filter

    from napari_xrd.core.spots import find_spots

    image = np.asarray(image)
    dmap = geometry.d_spacing_map()
    shell = _shell_index(dmap)
    bg = [float(np.median(image[(shell == k) & valid])) for k in range(len(SHELLS) - 1)]
    # pixel noise in an unshadowed corner: residual from a 9x9 median, neighbour correlation
    sub = image[200:900, 200:900].astype(np.float32)
    res = (sub - median_filter(sub, 9))[8:-8, 8:-8]
    ok = np.abs(res) < 5 * res.std()
    a, b = res[:, :-1], res[:, 1:]
    k = ok[:, :-1] & ok[:, 1:]
    noise = (float(res[ok].std()), float(np.corrcoef(a[k], b[k])[0, 1]))
    t = time.perf_counter()
    found = find_spots(image, geometry=geometry, pixel_mask=pixel_mask)
    t_find = time.perf_counter() - t
    d = np.asarray(found.table["d"])
    size = np.asarray(found.table["size"])
    inten = np.asarray(found.table["intensity"])
    sidx = _shell_index(d)
    n_shells = len(SHELLS) - 1
    counts = [int((sidx == k).sum()) for k in range(n_shells)]
    sizes = [float(np.median(size[sidx == k])) if np.any(sidx == k) else float("nan") for k in range(n_shells)]
    intens = [float(np.median(inten[sidx == k])) if np.any(sidx == k) else float("nan") for k in range(n_shells)]
    return bg, noise, counts, sizes, intens, t_find


def bench_realism(n_orientations: int) -> None:
    from napari_xrd.core.detectors import get_detector
    from napari_xrd.core.io import open_image
    from napari_xrd.core.simulate import common_crystal, random_orientation, simulate_still

    print("\n== realism: real ADSC Q4 lysozyme frame vs simulated, same geometry ==")
    real = open_image(REAL)
    g = real.geometry
    img = np.asarray(real.data[0])
    print(f"geometry: {g.name} {g.shape[1]}x{g.shape[0]}, {g.distance} mm, {g.wavelength} Å, "
          f"beam centre ({g.beam_center[0]:.1f}, {g.beam_center[1]:.1f}) px; simulated: lysozyme P43212, "
          f"1° oscillation, {n_orientations} random orientations")
    r_bg, r_noise, r_counts, r_sizes, r_int, _ = _measure(img, g, real.pixel_mask, img > 0)
    sims = []
    t_sim = []
    for k in range(n_orientations):
        crystal = common_crystal("lysozyme", orientation=random_orientation(np.random.default_rng(k)),
                                 wilson_b=ADSC_WILSON_B, structure_seed=k)
        t = time.perf_counter()
        st = simulate_still(g, crystal, seed=k, detector=get_detector("adsc_q4"), anomalies=ADSC_RING, **ADSC_SETTINGS)
        t_sim.append(time.perf_counter() - t)
        sims.append(_measure(st.image, g, st.pixel_mask, ~st.beamstop_mask))
    s_bg = np.median([s[0] for s in sims], axis=0)
    s_counts = np.array([s[2] for s in sims])
    s_sizes = np.nanmedian([s[3] for s in sims], axis=0)
    s_int = np.nanmedian([s[4] for s in sims], axis=0)
    print(f"(simulating one 2304x2304 frame took {statistics.median(t_sim):.2f} s)")
    print(f"{'shell (Å)':>12} | {'bg real':>7} {'bg sim':>7} | {'spots real':>10} {'spots sim (mean, range)':>24} | "
          f"{'size real':>9} {'size sim':>8} | {'I real':>7} {'I sim':>7}")
    for k, (a, b) in enumerate(zip(SHELLS[:-1], SHELLS[1:])):
        lo, hi = s_counts[:, k].min(), s_counts[:, k].max()
        print(f"{f'{a:g}-{b:g}':>12} | {r_bg[k]:7.1f} {s_bg[k]:7.1f} | {r_counts[k]:10d} "
              f"{f'{s_counts[:, k].mean():.1f} ({lo}-{hi})':>24} | {r_sizes[k]:9.1f} {s_sizes[k]:8.1f} | "
              f"{r_int[k]:7.0f} {s_int[k]:7.0f}")
    print(f"{'total':>12} | {'':7} {'':7} | {sum(r_counts):10d} {f'{s_counts.sum(axis=1).mean():.1f}':>24} |")
    s_noise = np.median([s[1] for s in sims], axis=0)
    print(f"background noise (ADU, 700x700 corner): real {r_noise[0]:.2f} sim {s_noise[0]:.2f}; "
          f"neighbour correlation real {r_noise[1]:.2f} sim {s_noise[1]:.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="images for the speed figures")
    ap.add_argument("--orientations", type=int, default=5, help="crystal orientations for the realism table")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-realism", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="override ADSC_SETTINGS (or wilson_b) for the realism run, e.g. --set intensity_scale=80")
    args = ap.parse_args(argv)
    global ADSC_WILSON_B
    for item in args.set:
        name, value = item.split("=", 1)
        if name == "wilson_b":
            ADSC_WILSON_B = float(value)
        else:
            ADSC_SETTINGS[name] = float(value)
    if not args.skip_speed:
        bench_speed(args.n)
    if not args.skip_realism:
        if not REAL.exists():
            print(f"real frame {REAL} not found; realism comparison skipped", file=sys.stderr)
        else:
            bench_realism(args.orientations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
