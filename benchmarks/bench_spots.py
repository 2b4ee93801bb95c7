"""Spot finding: U-Net vs the DIALS dispersion baseline vs peakfinder8, in one run.

Prints (nothing is asserted):

1. Accuracy on held-out simulated full-size Pilatus 6M stills (water ring, ice
   rings smooth or spotty, beamstop, module gaps, dead pixels; plus frames
   without ice; simulator seeds never used for training): recall of true
   spots with SNR >= 5, precision (a predicted spot is right when a true
   reflection lies within 3 px), F1, and the mask IoU on spot pixels.  Per
   frame and as means over all frames, over frames without spotty ice, and
   over spotty-ice frames only; each for the three ice-ring treatments of
   ``find_spots(ice_rings=...)`` ("keep": nothing dropped, "auto": the
   likely ice grains of a frame with spotty ice dropped, "filter": DIALS's
   fixed ice-ring filter), applied to the spot lists of all three finders
   alike (for "auto": each spot's resolution and whether it lies on the
   lattice of the frame's other spots; for the U-Net's and the dispersion
   finder's also their look, which peakfinder8's positions lack), as is
   the default removal of spots in the beamstop's shadow
   (``beamstop_shadow``).
2. The real ADSC Q4 frame: the fraction of the dispersion finder's spots that
   the U-Net also finds (within 3 px), and U-Net spots in module seams or the
   beamstop shadow.
3. Speed per frame at Pilatus 6M and EIGER 16M sizes (CPU; U-Net / dispersion
   ratio, the finders taking turns over 5 rounds, each timed on its second run in
   a row), and the peak resident memory of full-size CPU U-Net inference
   (measured in a child process).
4. On a CUDA GPU (skipped without one): EIGER 16M frames per second of U-Net
   inference (fp16) per batch size, with peak GPU memory.
5. Screening a sweep (``screening``, not in the default parts): frames per
   second of :func:`~napari_xrd.core.spots.frames.find_spots_in_frames`
   over a stack of full-size Pilatus 6M frames read from a ``.npy`` file,
   in one process (torch's threads) and in one worker process per core (one
   thread each), for both finders; the ratios compare runs on the same
   frames in the same run.
6. The ice rule on frames it was not developed on (``ice-check``, not in
   the default parts): realistic Pilatus 6M stills of the project simulator
   with random anomalies (``random_still``, seed 9600; ice rings on some,
   spotty on some), U-Net spots with ``ice_rings="keep"`` and "auto": how
   much recall the rule costs on frames without spotty ice (false alarms)
   and how much precision it gains on frames with.

peakfinder8 is the compiled ``peakfinder_8`` of the ``ondamonitor`` package,
called directly (its Python wrapper uses ``np.float_``, gone in NumPy 2).

Usage::

    python benchmarks/bench_spots.py [--frames 12] [--no-ice-frames 4] [--model default] [--parts accuracy,real,speed,screening,ice-check]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_xrd.core.beam_center.beamstop import beamstop_shadow_mask
from napari_xrd.core.coords import pixel_index
from napari_xrd.core.spots import find_spots, frame_statistics, spot_descriptors
from napari_xrd.core.spots.ice import ice_line_distance
from napari_xrd.core.spots.metrics import mask_iou, match_spots, spot_scores

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT_SEED = 9000  # training data used simulator seeds 201-206


def held_out_pilatus(index: int):
    """A full-size Pilatus 6M still that no training run has seen."""
    from napari_xrd.core.simulate import random_still
    from napari_xrd.core.simulate.generate import example_rng

    return random_still(
        example_rng(HELD_OUT_SEED, index),
        detector="pilatus6m",
        shape=None,
        anomalies=["background_ring", "ice_ring"],
        style="realistic",
        beamstop=True,
        dead_fraction=3e-4,
    )


def peakfinder8(image, pixel_mask, geometry, *, min_snr=5.0, adc_thresh=10.0, min_pix=2, max_pix=200, bg_radius=3):
    """Cheetah/OnDA peakfinder8 on the whole frame as one panel; (n, 2) (fast, slow) corner convention."""
    from om.algorithms._crystallography import peakfinder_8

    img = np.ascontiguousarray(np.nan_to_num(image), dtype=np.float32)
    mask = np.ascontiguousarray((pixel_mask == 0) if pixel_mask is not None else np.ones(img.shape, bool), dtype=np.int8)
    ny, nx = img.shape
    yy, xx = np.mgrid[:ny, :nx]
    bx, by = geometry.beam_center
    r = np.ascontiguousarray(np.hypot(xx + 0.5 - bx, yy + 0.5 - by), dtype=np.float32)
    empty = np.zeros(1, dtype=np.int32)  # radial statistics from every pixel (fast_mode off)
    out = peakfinder_8(
        10000, img, mask, r, 0, empty, empty, 0, nx, ny, 1, 1, adc_thresh, min_snr, min_pix, max_pix, bg_radius
    )
    fs, ss = np.asarray(out[0], float), np.asarray(out[1], float)
    return np.column_stack([fs + 0.5, ss + 0.5])  # peakfinder8 indexes pixel centres from 0


def held_out_no_ice(index: int):
    """A held-out full-size Pilatus 6M still without ice (water ring only); another unseen seed."""
    from napari_xrd.core.simulate import random_still
    from napari_xrd.core.simulate.generate import example_rng

    return random_still(
        example_rng(HELD_OUT_SEED + 1, index),
        detector="pilatus6m",
        shape=None,
        anomalies=["background_ring"],
        style="realistic",
        beamstop=True,
        dead_fraction=3e-4,
    )


ICE_VARIANTS = ("keep", "auto", "filter")  # find_spots(ice_rings=...), applied to every method alike
GROUPS = ("all", "no spotty ice", "spotty ice only")


def _ice_kind(still) -> str:
    ice = still.params.get("anomalies", {}).get("ice_ring")
    if ice is None:
        return "no-ice"
    return "spotty" if ice.get("spotty") else "smooth"


def _score(xy, d, true_xy, strong, ice, geometry, pixel_mask, shadow=None, descriptors=None, predicted=None):
    """Scores after the shadow and ice rules; the positions (lattice) and ``descriptors`` (looks) refine "auto".

    ``predicted`` marks spots of find_spots' lattice search, which its ice rule ("auto"/"keep") neither judges
    nor learns from (the fixed "filter" takes them like any other).
    """
    from napari_xrd.core.spots.ice import flag_ice_ring_spots

    predicted = np.zeros(len(xy), bool) if predicted is None else np.asarray(predicted, bool)
    if shadow is not None and len(xy):  # find_spots' default beamstop_shadow="auto", for every finder alike
        out = shadow[pixel_index(xy, shadow.shape)]
        xy, d, predicted = xy[~out], d[~out], predicted[~out]
        descriptors = None if descriptors is None else descriptors[~out]
    if ice == "filter" and len(xy):
        xy = xy[~flag_ice_ring_spots(d, mode=ice, geometry=geometry, pixel_mask=pixel_mask)]
    elif ice != "keep" and len(xy):
        own = ~predicted
        on_ice = np.zeros(len(xy), bool)
        on_ice[own] = flag_ice_ring_spots(d[own], mode=ice, geometry=geometry, pixel_mask=pixel_mask,
                                          descriptors=None if descriptors is None else descriptors[own],
                                          positions=xy[own])
        xy = xy[~on_ice]
    scores = spot_scores(xy, true_xy, radius=3.0, true_weight=strong)
    scores["found"] = match_spots(xy, true_xy, radius=3.0)[1][np.asarray(strong, bool)]  # per strong true spot
    return scores


def _frames(n_ice: int, n_no_ice: int):
    for i in range(n_ice):
        yield f"ice {i}", held_out_pilatus(i)
    for i in range(n_no_ice):
        yield f"no-ice {i}", held_out_no_ice(i)


def accuracy(n_frames: int, model: str, n_no_ice: int = 2):
    """Per-frame and mean figures of the three finders, for each ice-ring variant."""
    names = ("unet", "dispersion", "peakfinder8")
    rows = []  # one dict per frame: kind, n_strong, scores[(name, ice)]
    for label, still in _frames(n_frames, n_no_ice):
        img, pm, geom = still.image, still.pixel_mask, still.geometry
        spots = still.spots
        true_xy = np.column_stack([spots["fast"], spots["slow"]])
        strong = (spots["snr"] >= 5) & spots["in_mask"]
        valid = pm == 0
        shadow = beamstop_shadow_mask(img, valid, beam_center=geom.beam_center, pixel_size=geom.pixel_size)
        found, ious = {}, {}
        n_lattice = 0
        # the resolution limit: the same definition (frame_statistics) on the true spots and on each finder's
        # spots as find_spots returns them by default (likely ice grains and spots in the shadow dropped)
        d_min = {"truth": frame_statistics({"d": spots["d"][strong], "intensity": np.zeros(int(strong.sum()))})[
            "estimated_d_min"]}
        for name in ("unet", "dispersion"):
            res = find_spots(img, method=name, pixel_mask=pm, geometry=geom, model=model, device="cpu",
                             ice_rings="keep", beamstop_shadow="keep")
            found[name] = (res.table.fast_slow(), res.table["d"], spot_descriptors(res.table), res.table["predicted"])
            ious[name] = mask_iou(res.labels > 0, still.spot_mask, valid=valid)
            if "predicted" in res.table and res.table["predicted"].any():
                n_lattice = int(res.table["predicted"].sum())  # find_spots(lattice_search="auto"): U-Net only
            kept = ~(res.table["ice_ring"] | res.table["beamstop_shadow"])
            d_min[name] = frame_statistics({k: v[kept] for k, v in res.table.items()})["estimated_d_min"]
        try:
            pf = peakfinder8(img, pm, geom)
            pf_d = np.atleast_1d(geom.resolution_at(pf[:, 0], pf[:, 1])) if len(pf) else np.zeros(0)
            found["peakfinder8"] = (pf, pf_d, None, None)  # positions only: no look for the ice rule
            ious["peakfinder8"] = float("nan")  # peakfinder8 reports positions only
        except ImportError as exc:
            print(f"  peakfinder8 skipped: ondamonitor not importable: {exc}")
        row = {"frame": label, "kind": _ice_kind(still), "n_strong": int(strong.sum()), "scores": {}, "d_min": d_min,
               "n_lattice": n_lattice,
               # distance of each strong true spot from the nearest ice line, in 1/d (Å⁻¹)
               "ice_distance": ice_line_distance(spots["d"][strong])}
        for name, (xy, d, looks, predicted) in found.items():
            for ice in ICE_VARIANTS:
                s = _score(xy, d, true_xy, strong, ice, geom, pm, shadow, looks, predicted)
                s["iou"] = ious[name] if ice == "keep" else float("nan")
                row["scores"][(name, ice)] = s
        rows.append(row)
        ice = still.params.get("anomalies", {}).get("ice_ring", {})
        extra = f", {ice.get('photons', 0):.0f} photons/px" if ice else ""
        print(f"  frame {label} ({row['kind']}{extra}): {row['n_strong']} true spots with SNR >= 5 "
              f"({len(spots)} reflections); estimated d_min (Å): "
              + ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in d_min.items())
              + f"; U-Net spots found at lattice-predicted positions: {n_lattice}", flush=True)
        for name in names:
            if (name, "keep") not in row["scores"]:
                continue
            parts = []
            for ice in ICE_VARIANTS:
                r = row["scores"][(name, ice)]
                parts.append(f"{ice}: R {r['recall']:.3f} P {r['precision']:.3f} F1 {r['f1']:.3f}")
            print(f"    {name:<12} " + " | ".join(parts))
    return _summarise(rows, names)


def _summarise(rows, names):
    kinds = [r["kind"] for r in rows]
    print(f"\nFrames: {len(rows)} ({kinds.count('smooth')} smooth ice, {kinds.count('spotty')} spotty ice, "
          f"{kinds.count('no-ice')} no ice)")
    summary = {"frames": [{"frame": r["frame"], "kind": r["kind"], "n_strong": r["n_strong"],
                           **{f"{n}/{ice}": {k: r["scores"][(n, ice)][k] for k in ("recall", "precision", "f1")}
                              for (n, ice) in r["scores"]}} for r in rows]}
    for group in GROUPS:
        sel = [r for r in rows if group == "all" or (r["kind"] == "spotty") == (group == "spotty ice only")]
        if not sel:
            continue
        for ice in ICE_VARIANTS:
            print(f"\nHeld-out Pilatus 6M frames, {group} ({len(sel)} frames), ice_rings={ice!r} (mean over frames):")
            print(f"{'method':<12} {'recall(SNR>=5)':>15} {'precision':>10} {'F1':>7} {'mask IoU':>9} {'pred/frame':>11}")
            for name in names:
                rs = [r["scores"][(name, ice)] for r in sel if (name, ice) in r["scores"]]
                if not rs:
                    continue
                rec = float(np.nanmean([r["recall"] for r in rs]))
                prec = float(np.nanmean([r["precision"] for r in rs]))
                f1 = float(np.nanmean([r["f1"] for r in rs]))
                ious = [r["iou"] for r in rs if np.isfinite(r["iou"])]
                iou = float(np.mean(ious)) if ious else float("nan")
                npred = float(np.mean([r["n_predicted"] for r in rs]))
                summary[f"{group}/{ice}/{name}"] = dict(recall=rec, precision=prec, f1=f1, iou=iou, n_frames=len(rs))
                print(f"{name:<12} {rec:>15.4f} {prec:>10.4f} {f1:>7.4f} {iou:>9.4f} {npred:>11.1f}")
    spotty = [r for r in rows if r["kind"] == "spotty"]
    if spotty:
        dist = np.concatenate([r["ice_distance"] for r in spotty])
        print(f"\nFrames with spotty ice ({len(spotty)}): recall of the true spots with SNR >= 5 by their distance "
              "from the nearest ice line in 1/d (Å⁻¹), all frames' spots pooled (a ring's σ is 0.0012-0.004):")
        bins = ((0.0, 0.003), (0.003, 0.006), (0.006, 0.012), (0.012, 0.03), (0.03, np.inf))
        print(f"{'method / ice_rings':<24}" + "".join(f"{f'{lo:g}-{hi:g}':>12}" for lo, hi in bins))
        print(f"{'(true spots)':<24}" + "".join(f"{int(((dist >= lo) & (dist < hi)).sum()):>12}" for lo, hi in bins))
        for name in names:
            for ice in ("keep", "auto"):
                if any((name, ice) not in r["scores"] for r in spotty):
                    continue
                hit = np.concatenate([r["scores"][(name, ice)]["found"] for r in spotty])
                rec = [float(hit[(dist >= lo) & (dist < hi)].mean()) if ((dist >= lo) & (dist < hi)).any()
                       else float("nan") for lo, hi in bins]
                summary[f"spotty_by_ice_distance/{name}/{ice}"] = {f"{lo:g}-{hi:g}": v for (lo, hi), v in zip(bins, rec)}
                print(f"{f'{name} / {ice}':<24}" + "".join(f"{v:>12.3f}" for v in rec))
    print("\nEstimated resolution limit (frame_statistics: all but the outermost 1 % of the spots off the ice "
          "lines), against the same on the true spots with SNR >= 5; |d - d_true| / d_true:")
    for name in ("unet", "dispersion"):
        err = [abs(r["d_min"][name] / r["d_min"]["truth"] - 1) for r in rows
               if r["d_min"].get(name) is not None and r["d_min"]["truth"] is not None]
        if err:
            print(f"  {name:<12} frames {len(err):>3}  median {np.median(err):.3f}  max {np.max(err):.3f}")
            summary[f"d_min/{name}"] = {"median_rel_err": float(np.median(err)), "max_rel_err": float(np.max(err)),
                                        "n_frames": len(err)}
    return summary


def beamstop_shadow(image, geometry, valid, *, search_px=150):
    """The dark region near the beam centre: the beamstop's shadow (dilated by 3 px).

    Valid-pixel-weighted smoothing (so seams do not darken it), pixels below
    60 % of the median, and of those connected regions the one that covers
    most of a disc of ``search_px`` around the beam centre.
    """
    from scipy import ndimage

    w = valid.astype(np.float32)
    smooth = ndimage.uniform_filter(np.where(valid, image, 0).astype(np.float32), 15) / np.maximum(
        ndimage.uniform_filter(w, 15), 1e-3
    )
    dark = smooth < 0.6 * np.median(image[valid])
    lab, n = ndimage.label(dark)
    ny, nx = image.shape
    yy, xx = np.ogrid[:ny, :nx]
    bx, by = geometry.beam_center
    disc = (xx + 0.5 - bx) ** 2 + (yy + 0.5 - by) ** 2 < search_px**2
    counts = np.bincount(lab[disc], minlength=n + 1)
    counts[0] = 0
    if n == 0 or counts.max() == 0:
        return np.zeros(image.shape, bool)
    return ndimage.binary_dilation(lab == counts.argmax(), iterations=3)


def real_adsc(model: str):
    from napari_xrd.core.io import open_image

    path = ROOT / "sample_data" / "adsc_q4_lysozyme_2002.img.bz2"
    im = open_image(path)
    img, pm, geom = im.frame(0), im.pixel_mask, im.geometry
    valid = np.ones(img.shape, bool) if pm is None else pm == 0
    disp = find_spots(img, method="dispersion", pixel_mask=pm, geometry=geom)
    unet = find_spots(img, method="unet", pixel_mask=pm, geometry=geom, model=model, device="cpu")
    _, disp_hit = match_spots(unet.table.fast_slow(), disp.table.fast_slow(), radius=3.0)
    xy = disp.table.fast_slow()
    ny, nx = img.shape
    inner = (xy[:, 0] > 3) & (xy[:, 0] < nx - 3) & (xy[:, 1] > 3) & (xy[:, 1] < ny - 3)
    shadow = beamstop_shadow(img, geom, valid)
    in_seams = int(np.unique(unet.labels[~valid]).size - 1) if (~valid).any() else 0
    in_shadow = len(set(np.unique(unet.labels[shadow])) - {0})
    print(f"\nReal ADSC Q4 frame ({path.name}):")
    print(f"  dispersion spots {disp.table.n_spots}, U-Net spots {unet.table.n_spots}")
    print(f"  fraction of dispersion spots found by the U-Net (3 px): {disp_hit.mean():.3f}")
    print(f"  ... of those more than 3 px from the CCD's outer edge ({int(inner.sum())} spots; the dispersion "
          f"finder also fires on the CCD's dark, noisy outermost rows/columns): {disp_hit[inner].mean():.3f}")
    print(f"  U-Net spots in module seams: {in_seams}; in the beamstop shadow ({int(shadow.sum())} px): {in_shadow}")
    # the CCD's outermost rows and columns respond differently (dark, noisy): how the figure reads with them masked
    inner_level = float(np.median(img[8:-8, 8:-8][valid[8:-8, 8:-8]]))
    edges = {"first row": img[0], "last row": img[-1], "first column": img[:, 0], "last column": img[:, -1]}
    print("  outermost row/column median / interior median: "
          + ", ".join(f"{k} {np.median(v) / inner_level:.2f}" for k, v in edges.items()))
    pm_edge = (np.zeros(img.shape, np.uint32) if pm is None else np.array(pm, np.uint32))
    pm_edge[[0, -1], :] |= 256
    pm_edge[:, [0, -1]] |= 256
    disp_e = find_spots(img, method="dispersion", pixel_mask=pm_edge, geometry=geom)
    unet_e = find_spots(img, method="unet", pixel_mask=pm_edge, geometry=geom, model=model, device="cpu")
    _, hit_e = match_spots(unet_e.table.fast_slow(), disp_e.table.fast_slow(), radius=3.0)
    print(f"  with the outermost row and column masked (USER bit): dispersion spots {disp_e.table.n_spots}, "
          f"U-Net spots {unet_e.table.n_spots}, fraction of dispersion spots found by the U-Net {hit_e.mean():.3f}")
    # the header's beam centre is far off on this frame (X and Y swapped), so the ring background's
    # cross-check refuses the rings there; with the centre estimated from the image, as the widget applies it
    from napari_xrd.core.beam_center import estimate_beam_center
    from napari_xrd.core.spots.inference import frame_background

    est = estimate_beam_center(img, geometry=geom, pixel_mask=pm).geometry
    for label, g in (("header centre", geom), ("estimated centre", est)):
        info = frame_background(img, valid, g)[1]
        print(f"  ring background with the {label} {tuple(round(v, 1) for v in g.beam_center)}: "
              f"{'used' if info['rings_used'] else 'refused'} (structure: blocks {info['structure_blocks']:.3f}, "
              f"rings {info['structure_rings']:.3f}, opposite quadrants {info['structure_opposite']:.3f})")
    unet_b = find_spots(img, method="unet", pixel_mask=pm, geometry=est, model=model, device="cpu")
    disp_b = find_spots(img, method="dispersion", pixel_mask=pm, geometry=est)
    _, hit_b = match_spots(unet_b.table.fast_slow(), disp_b.table.fast_slow(), radius=3.0)
    xy_b = disp_b.table.fast_slow()
    inner_b = (xy_b[:, 0] > 3) & (xy_b[:, 0] < nx - 3) & (xy_b[:, 1] > 3) & (xy_b[:, 1] < ny - 3)
    in_seams_b = int(np.unique(unet_b.labels[~valid]).size - 1) if (~valid).any() else 0
    print(f"  with the estimated centre: dispersion spots {disp_b.table.n_spots}, U-Net spots {unet_b.table.n_spots}, "
          f"fraction of dispersion spots found by the U-Net {hit_b.mean():.3f} (inner {hit_b[inner_b].mean():.3f}), "
          f"U-Net spots in module seams {in_seams_b}")
    return {"fraction_found": float(disp_hit.mean()), "fraction_found_inner": float(disp_hit[inner].mean()),
            "fraction_found_edge_masked": float(hit_e.mean()), "in_seams": in_seams, "in_shadow": in_shadow,
            "fraction_found_estimated_centre": float(hit_b.mean())}


def _interleaved(fns, rounds=5):
    """Seconds of each call per round, the calls taking turns (a shared machine's slow spells hit them alike).

    In each round every call runs twice in a row and the second run is timed: a run right after another
    finder's pays for the memory that finder returned to the system (page faults), which a process
    screening frames with one finder does not.
    """
    out = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            t = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t)
    return {name: np.array(ts) for name, ts in out.items()}


def speed(model: str):
    import torch

    from napari_xrd.core.simulate import random_still
    from napari_xrd.core.simulate.generate import example_rng

    print(f"\nSpeed per frame on the CPU ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores):")
    n_threads = torch.get_num_threads()
    print(f"(dispersion and peakfinder8 run on one core; U-Net with {n_threads} threads, and with 1 thread; "
          "bf16: precision='mixed'; 5 rounds in which the finders take turns, each timed on its second run in a "
          "row. The times are each finder's fastest, the ratios those of the fastest runs: on a shared machine, "
          "other jobs' memory traffic slows the memory-bound dispersion more than the U-Net's convolutions, "
          "which flatters a typical ratio; each round's ratio is listed too)")
    print(f"{'detector':<10} {'pixels':>10} {'dispersion s':>13} {'U-Net s':>9} {'ratio':>6} "
          f"{'U-Net 1 thr s':>14} {'ratio':>6} {'U-Net bf16 s':>13} {'ratio':>6} {'peakfinder8 s':>14}  "
          "ratio per round")
    out = {}
    for det in ("pilatus6m", "eiger16m"):
        still = random_still(example_rng(HELD_OUT_SEED + 500, 0), detector=det, shape=None, style="realistic")
        img, pm, geom = still.image, still.pixel_mask, still.geometry
        find_spots(img[:512, :512], method="unet", pixel_mask=pm[:512, :512], model=model, device="cpu")  # warm up
        fns = {"dispersion": lambda: find_spots(img, method="dispersion", pixel_mask=pm, geometry=geom),
               "unet": lambda: find_spots(img, method="unet", pixel_mask=pm, geometry=geom, model=model,
                                          device="cpu"),
               "unet_1": lambda: find_spots(img, method="unet", pixel_mask=pm, geometry=geom, model=model,
                                            device="cpu", threads=1),
               "unet_mixed": lambda: find_spots(img, method="unet", pixel_mask=pm, geometry=geom, model=model,
                                                device="cpu", precision="mixed")}
        try:
            peakfinder8(img[:64, :64], pm[:64, :64], geom)
            fns["peakfinder8"] = lambda: peakfinder8(img, pm, geom)
        except ImportError:
            pass
        ts = _interleaved(fns)
        td, tu, t1, tm = (float(np.min(ts[k])) for k in ("dispersion", "unet", "unet_1", "unet_mixed"))
        ratios = ts["unet"] / ts["dispersion"]
        tp = f"{np.min(ts['peakfinder8']):14.2f}" if "peakfinder8" in ts else f"{'n/a':>14}"
        out[det] = {"dispersion_s": td, "unet_s": tu, "ratio": tu / td, "unet_1_thread_s": t1,
                    "ratio_1_thread": t1 / td, "unet_mixed_s": tm, "ratio_mixed": tm / td,
                    "ratios_per_round": [float(r) for r in ratios],
                    "times_s": {k: [float(x) for x in v] for k, v in ts.items()}}
        print(f"{det:<10} {img.size:>10} {td:>13.2f} {tu:>9.2f} {tu / td:>6.2f} {t1:>14.2f} {t1 / td:>6.2f} "
              f"{tm:>13.2f} {tm / td:>6.2f} {tp}  "
              + " ".join(f"{r:.2f}" for r in ratios))
        if det == "eiger16m":
            rss = peak_rss(img, pm, model)
            print(f"  peak RSS of full-size CPU U-Net inference on EIGER 16M (child process): {rss / 1e9:.2f} GB")
            out["peak_rss_gb"] = rss / 1e9
    return out


def gpu_throughput(model: str, n_frames: int = 20):
    """EIGER 16M frames per second of U-Net inference on CUDA (fp16), per batch size; peak GPU memory."""
    import torch

    from napari_xrd.core.simulate import random_still
    from napari_xrd.core.simulate.generate import example_rng
    from napari_xrd.core.spots.inference import predict_spot_probability

    if not torch.cuda.is_available():
        print("\nGPU throughput: no CUDA GPU here; skipped")
        return None
    name = torch.cuda.get_device_name(0)
    still = random_still(example_rng(HELD_OUT_SEED + 500, 0), detector="eiger16m", shape=None, style="realistic")
    img, pm = still.image, still.pixel_mask
    print(f"\nGPU throughput on {name}, EIGER 16M frames ({img.shape[1]} x {img.shape[0]}), fp16 autocast, "
          f"input normalised on the GPU; {n_frames} frames after a warm-up; probability map copied back to the host:")
    out = {"device": name, "runs": []}
    for batch in (16, 32, 64, 128):
        predict_spot_probability(img, pixel_mask=pm, model=model, device="cuda", batch_size=batch)  # warm up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        for _ in range(n_frames):
            predict_spot_probability(img, pixel_mask=pm, model=model, device="cuda", batch_size=batch)
        torch.cuda.synchronize()
        fps = n_frames / (time.perf_counter() - t)
        mem = torch.cuda.max_memory_allocated() / 2**30
        t = time.perf_counter()
        for _ in range(3):
            find_spots(img, method="unet", pixel_mask=pm, model=model, device="cuda", batch_size=batch)
        fps_full = 3 / (time.perf_counter() - t)
        print(f"  batch {batch:>4}: probability maps {fps:7.1f} frames/s, peak GPU memory {mem:5.2f} GiB; "
              f"find_spots (labels, table, ice and shadow rules on the CPU) {fps_full:6.2f} frames/s")
        out["runs"].append({"batch_size": batch, "frames_per_s": fps, "peak_gpu_gib": mem,
                            "find_spots_frames_per_s": fps_full})
    return out


def screening(model: str, n_frames: int = 8):
    """Frames per second over a sweep: one process vs one worker process per core, both finders."""
    from napari_xrd.core.io import open_image
    from napari_xrd.core.simulate import random_still
    from napari_xrd.core.simulate.generate import example_rng
    from napari_xrd.core.spots.frames import find_spots_in_frames

    cores = os.cpu_count() or 1
    stills = [random_still(example_rng(HELD_OUT_SEED + 700, i), detector="pilatus6m", shape=None, style="realistic")
              for i in range(n_frames)]
    geometry, pm = stills[0].geometry, stills[0].pixel_mask
    print(f"\nScreening {n_frames} full-size Pilatus 6M frames from a .npy stack ({cores} cores; wall-clock; "
          "the first frame of each run includes loading the model and starting the workers):")
    print(f"{'method':<11} {'1 process fr/s':>15} {f'{cores} workers fr/s':>17} {'speed-up':>9} {'same spots':>11}")
    out = {}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sweep.npy"
        np.save(path, np.stack([s.image for s in stills]))
        img = open_image(path)
        for method in ("dispersion", "unet"):
            opts = dict(method=method, geometry=geometry, pixel_mask=pm, with_labels=False)
            if method == "unet":
                opts.update(model=model, device="cpu")
            runs = {}
            for nproc in (1, cores):
                t = time.perf_counter()
                counts = [table.n_spots for _, _, table in find_spots_in_frames(img, nproc=nproc, **opts)]
                runs[nproc] = (n_frames / (time.perf_counter() - t), counts)
            (f1, c1), (fn, cn) = runs[1], runs[cores]
            print(f"{method:<11} {f1:>15.3f} {fn:>17.3f} {fn / f1:>9.2f} {str(c1 == cn):>11}")
            out[method] = {"frames_per_s_1_process": f1, f"frames_per_s_{cores}_workers": fn, "speed_up": fn / f1,
                           "same_spot_counts": c1 == cn}
    return out


def ice_check(model: str, n_frames: int = 40):
    """The ice rule's false alarms and gains on independent random stills (seed 9600)."""
    from napari_xrd.core.simulate import random_still
    from napari_xrd.core.simulate.generate import example_rng

    print(f"\nIce rule on {n_frames} random realistic Pilatus 6M stills (seed 9600), U-Net, shadow kept:")
    print(f"{'frame':>5} {'ice':<7} {'#SNR>=5':>7} {'flagged':>7} {'keep R':>7} {'keep P':>7} {'auto R':>7} {'auto P':>7}")
    rows = []
    for i in range(1, n_frames + 1):
        still = random_still(example_rng(HELD_OUT_SEED + 600, i), detector="pilatus6m", shape=None, style="realistic")
        spots = still.spots
        true_xy = np.column_stack([spots["fast"], spots["slow"]])
        strong = (spots["snr"] >= 5) & spots["in_mask"]
        res = find_spots(still.image, method="unet", pixel_mask=still.pixel_mask, geometry=still.geometry,
                         model=model, device="cpu", ice_rings="keep", beamstop_shadow="keep")
        xy, flagged = res.table.fast_slow(), np.asarray(res.table["ice_ring"], bool)
        keep = spot_scores(xy, true_xy, true_weight=strong)
        auto = spot_scores(xy[~flagged], true_xy, true_weight=strong)
        rows.append((_ice_kind(still), keep, auto))
        print(f"{i:>5} {rows[-1][0]:<7} {int(strong.sum()):>7} {int(flagged.sum()):>7} {keep['recall']:>7.3f} "
              f"{keep['precision']:>7.3f} {auto['recall']:>7.3f} {auto['precision']:>7.3f}", flush=True)
    out = {}
    for group, kinds in (("no spotty ice", ("no-ice", "smooth")), ("spotty ice", ("spotty",))):
        sel = [(k, a) for kind, k, a in rows if kind in kinds]
        if not sel:
            continue
        mean = {f"{v}_{m}": float(np.nanmean([r[0 if v == "keep" else 1][m] for r in sel]))
                for v in ("keep", "auto") for m in ("recall", "precision")}
        alarms = sum(k["recall"] - a["recall"] > 0.01 for k, a in sel)
        print(f"  {group} ({len(sel)} frames): keep R {mean['keep_recall']:.4f} P {mean['keep_precision']:.4f} | "
              f"auto R {mean['auto_recall']:.4f} P {mean['auto_precision']:.4f}; auto loses > 0.01 recall on {alarms}")
        out[group] = {**mean, "frames": len(sel), "frames_losing_recall": int(alarms)}
    return out


def peak_rss(img, pm, model) -> int:
    with tempfile.TemporaryDirectory() as d:
        np.save(Path(d) / "img.npy", img)
        np.save(Path(d) / "pm.npy", pm)
        code = (
            "import numpy as np, resource, sys\n"
            "from napari_xrd.core.spots import find_spots\n"
            f"img=np.load('{d}/img.npy'); pm=np.load('{d}/pm.npy')\n"
            f"r=find_spots(img, method='unet', pixel_mask=pm, model={model!r}, device='cpu')\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
        )
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return int(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=12,
                   help="held-out simulated Pilatus frames with ice rings, smooth or spotty (default 12)")
    p.add_argument("--no-ice-frames", type=int, default=4,
                   help="further held-out Pilatus frames without ice (default 4)")
    p.add_argument("--model", default="default")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--parts", default="accuracy,real,speed,gpu",
                   help="comma-separated subset of accuracy,real,speed,gpu,screening,ice-check (gpu: skipped without "
                   "CUDA)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    if args.skip_speed:
        parts.discard("speed")
    results = {}
    if "accuracy" in parts:
        results["accuracy"] = accuracy(args.frames, args.model, args.no_ice_frames)
    if "real" in parts:
        results["real_adsc"] = real_adsc(args.model)
    if "speed" in parts:
        results["speed"] = speed(args.model)
    if "gpu" in parts:
        results["gpu"] = gpu_throughput(args.model)
    if "screening" in parts:
        results["screening"] = screening(args.model)
    if "ice-check" in parts:
        results["ice_check"] = ice_check(args.model)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
