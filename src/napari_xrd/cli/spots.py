"""``napari-xrd spots FILE``: find Bragg spots headless (dispersion or U-Net)."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser(
        "spots",
        help="find Bragg spots in an image (DIALS dispersion or the U-Net)",
        description="Find Bragg spots in one frame, a chosen frame of a stack, or every frame. "
        "Positions are (x=fast, y=slow) pixels in the DIALS corner convention (first pixel centre at 0.5, 0.5).",
    )
    p.add_argument("file", metavar="FILE", help="image file (CBF, SMV/.img, NeXus/HDF5, TIFF, .npy, ...); a directory or a quoted "
                   "glob pattern (\"sweep_*.cbf\") opens a numbered series as one stack")
    frames = p.add_mutually_exclusive_group()
    frames.add_argument("--frame", type=int, default=0, help="frame index (default 0)")
    frames.add_argument("--all", action="store_true", help="every frame")
    frames.add_argument("--frames", metavar="SPEC", default=None,
                        help="frames to search, 0-based: indices and inclusive ranges, e.g. 0-99,120 (-1 = last)")
    p.add_argument("--nproc", type=int, default=1,
                   help="worker processes, one frame each at a time with one CPU thread (default 1); on the CPU, one "
                   "per core screens a sweep fastest")
    p.add_argument("--method", choices=["dispersion", "unet"], default="dispersion")
    p.add_argument("--algorithm", choices=["dispersion_extended", "dispersion"], default="dispersion_extended",
                   help="dispersion threshold algorithm (default dispersion_extended, as DIALS)")
    p.add_argument("--gain", type=float, default=1.0)
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--sigma-background", type=float, default=6.0)
    p.add_argument("--sigma-strong", type=float, default=3.0)
    p.add_argument("--min-local", type=int, default=2)
    p.add_argument("--global-threshold", type=float, default=0.0)
    p.add_argument("--min-spot-size", type=int, default=None)
    p.add_argument("--max-spot-size", type=int, default=1000)
    p.add_argument("--model", default="default", help="U-Net model name or card path (default: the shipped one)")
    p.add_argument("--threshold", type=float, default=0.5, help="U-Net probability threshold (default 0.5)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (U-Net)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of the U-Net (default: one per core; 1 is steadier on a busy machine)")
    p.add_argument("--precision", choices=["auto", "float32", "mixed"], default="auto",
                   help="U-Net arithmetic: auto = fp16 on CUDA, float32 on the CPU (default); mixed = bf16 on the CPU "
                   "too (faster on CPUs with native bf16 instructions; the spots differ a little); float32 = full "
                   "precision everywhere")
    p.add_argument("--ice-rings", choices=["auto", "filter", "keep"], default="auto",
                   help="spots on hexagonal-ice rings (needs the geometry): auto = on a frame with spotty ice, drop the "
                   "spots more likely ice grains than Bragg spots; nothing on other frames (default); "
                   "filter = drop spots on every ice ring (DIALS filter.ice_rings); keep = drop none, flag them "
                   "(JSON ice_ring)")
    p.add_argument("--filter-ice-rings", dest="ice_rings", action="store_const", const="filter",
                   help="same as --ice-rings filter")
    p.add_argument("--beamstop-shadow", choices=["auto", "keep"], default="auto",
                   help="spots in the beamstop's shadow, found on the frame near the beam centre: auto = drop them "
                   "(default); keep = keep them, flagged (JSON beamstop_shadow)")
    p.add_argument("--min-spot-snr", type=float, default=None,
                   help="drop spots whose integrated signal-to-noise ratio over the local background is below this "
                   "(default: 2.5 for the U-Net, none for dispersion; JSON snr)")
    p.add_argument("--ring-background", choices=["auto", "on", "off"], default="auto",
                   help="U-Net: make the water and ice rings' profile in 2θ part of the input's background, so that "
                   "weak spots on narrow rings are seen (needs the geometry, beam centre good to a pixel or so): "
                   "auto = where a cross-check of the beam centre passes (default); on; off")
    p.add_argument("--large-spots", choices=["auto", "on", "off"], default="auto",
                   help="U-Net: a second pass on 2x2-binned pixels for large faint spots (streaks): auto = on frames "
                   "whose spots are wide (median extent >= 2 px; needs the geometry; with spotty ice, none near "
                   "an ice line) (default); on; off")
    p.add_argument("--ice-context", choices=["auto", "on", "off"], default="auto",
                   help="U-Net: a second pass whose attention leaves the ice lines out of its statistics, for spots "
                   "that bright ice grains hide elsewhere in their tiles (it replaces the first pass away from the "
                   "lines): auto = on frames with spotty ice (default); on; off")
    p.add_argument("--lattice-search", choices=["auto", "off"], default=None,
                   help="where the frame's spots index as a still's lattice, test the positions it predicts that "
                   "hold no spot yet and add the spots that stand out more than chance allows (JSON predicted): "
                   "auto (default for the U-Net); off (default for dispersion)")
    p.add_argument("--beam-center", default="header", metavar="header|estimate|FAST,SLOW",
                   help="beam centre for resolutions, ice rings and the ring background: header = the file's "
                   "(default); estimate = estimated from the first frame (napari-xrd beam-center; its tilt too); "
                   "FAST,SLOW = these pixels (DIALS corner convention)")
    p.add_argument("--summary", action="store_true",
                   help="one line (or JSON entry) per frame instead of the spots: spot count, count off the ice "
                   "rings, count at d >= 4 Å, total intensity over background, estimated resolution limit")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="print JSON when done: one entry per spot (per frame with --summary)")
    output.add_argument("--jsonl", action="store_true",
                        help="print JSON Lines as each frame is done: one line per spot (per frame with --summary)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_beam_center(text: str):
    """``"header"``, ``"estimate"`` or ``"FAST,SLOW"`` (pixels) as given to ``--beam-center``."""
    if text in ("header", "estimate"):
        return text
    try:
        fast, slow = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--beam-center {text!r}: use header, estimate or FAST,SLOW in pixels") from None
    return fast, slow


def spot_geometry(img, beam_center="header", *, frame: int = 0):
    """The geometry spots are measured in: the file's, or with another beam centre.

    Parameters
    ----------
    img : core.io image
        As :func:`napari_xrd.core.io.open_image` returns it.
    beam_center : "header", "estimate" or (fast, slow)
        "estimate": :func:`~napari_xrd.core.beam_center.estimate_beam_center`
        on ``frame`` (its centre and tilt); ``(fast, slow)``: pixels, DIALS
        corner convention.

    Returns
    -------
    geometry : DetectorGeometry or None
    estimate : BeamCenterResult or None
        The estimate, where one was made.
    """
    if beam_center in (None, "header"):
        return img.geometry, None
    if img.geometry is None:
        raise ValueError(f"{img.path}: --beam-center {beam_center if isinstance(beam_center, str) else 'FAST,SLOW'} "
                         "needs the detector geometry (distance, wavelength, pixel size), which this file does not "
                         "carry")
    if beam_center == "estimate":
        import numpy as np

        from napari_xrd.core.beam_center import estimate_beam_center

        result = estimate_beam_center(np.asarray(img.frame(frame)), geometry=img.geometry, pixel_mask=img.pixel_mask)
        return result.geometry, result
    fast, slow = beam_center
    return img.geometry.replace(beam_center=(float(fast), float(slow))), None


def spots_in_file(path, *, frames=None, nproc: int = 1, progress=None, cancel=None, beam_center="header",
                  geometry=None, **options) -> list[dict]:
    """Spots of frames of an image file, as JSON-ready dicts.

    Parameters
    ----------
    path : str or Path
    frames : sequence of int, optional
        Frame indices (default: frame 0).
    nproc : int
        Worker processes (see
        :func:`~napari_xrd.core.spots.frames.find_spots_in_frames`).
    beam_center : "header", "estimate" or (fast, slow)
        See :func:`spot_geometry`; an estimate is made on the first of
        ``frames`` and used for all.
    geometry : DetectorGeometry, optional
        Measure in this geometry instead (``beam_center`` is then ignored).
    **options
        Passed to :func:`napari_xrd.core.spots.find_spots`.

    Returns
    -------
    list of dict
        One per spot: ``frame``, ``x`` (fast), ``y`` (slow), ``intensity``,
        ``background``, ``size``, ``peak``, ``d``, ``sigma_radial`` and
        ``sigma_azimuthal`` (extent along and across the radius, px; None
        without geometry),
        ``ice_ring`` (likely an ice grain, or on an ice ring; see ``find_spots(ice_rings=...)``),
        ``ice_probability`` (that it is an ice grain; 0 without spotty ice),
        ``beamstop_shadow`` (in the beamstop's shadow), ``predicted`` (found
        where the frame's lattice predicts a spot), ``snr`` (integrated
        signal-to-noise ratio over the local background).
    """
    from napari_xrd.core.io import open_image

    img = open_image(path)
    frames = [0] if frames is None else list(frames)
    if geometry is None:
        geometry, _ = spot_geometry(img, beam_center, frame=frames[0])
    return [{"frame": int(f), **row}
            for f, _, table in _frame_tables(img, frames, geometry, nproc, progress, cancel, options)
            for row in table.rows()]


def _frame_tables(img, frames, geometry, nproc, progress, cancel, options):
    from napari_xrd.core.spots.frames import find_spots_in_frames

    return find_spots_in_frames(img, frames, nproc=nproc, geometry=geometry, with_labels=False, progress=progress,
                                cancel=cancel, **options)


def frame_summary(frame: int, table) -> dict:
    """One frame's screening figures (:func:`~napari_xrd.core.spots.frame_statistics`), with ``frame``."""
    from napari_xrd.core.spots import frame_statistics

    return {"frame": int(frame), **frame_statistics(table)}


def _format_summaries(path, summaries) -> str:
    """The summary table's title and header (with ``path``), or its rows (``path`` None)."""
    lines = [] if path is None else [
        f"{path}", f"{'frame':>6} {'#spots':>7} {'#no_ice':>7} {'#d>=4A':>7} {'total_intensity':>16} {'d_min':>6}"]
    for s in summaries:
        d_min = "" if s["estimated_d_min"] is None else f"{s['estimated_d_min']:.2f}"
        lines.append(f"{s['frame']:>6} {s['n_spots']:>7} {s['n_spots_no_ice']:>7} {s['n_spots_4A']:>7} "
                     f"{s['total_intensity']:>16.0f} {d_min:>6}")
    return "\n".join(lines)


def _format_sweep(summaries) -> str:
    """The summary table's footer: spots per frame as a bar strip (frames in the order searched), highlights."""
    from napari_xrd.core.spots.statistics import spot_count_strip, sweep_highlights

    counts = [s["n_spots"] for s in summaries]
    first, last = summaries[0]["frame"], summaries[-1]["frame"]
    return (f"spots per frame ({len(summaries)} frames, {first}–{last}): {spot_count_strip(counts)}\n"
            + sweep_highlights({s["frame"]: s for s in summaries}))


def run(args) -> int:
    import json

    from napari_xrd.core.io import open_image
    from napari_xrd.core.progress import tqdm_progress
    from napari_xrd.core.spots.frames import parse_frames

    beam_center = parse_beam_center(args.beam_center)
    img = open_image(args.file)
    n = img.n_frames
    if args.frames is not None:
        frames = parse_frames(args.frames, n)
    elif args.all:
        frames = list(range(n))
    else:
        if not -n <= args.frame < n:
            raise ValueError(f"{args.file}: frame {args.frame} out of range (0..{n - 1})")
        frames = [args.frame]
    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    options = dict(
        method=args.method,
        algorithm=args.algorithm,
        gain=args.gain,
        kernel_size=args.kernel_size,
        sigma_background=args.sigma_background,
        sigma_strong=args.sigma_strong,
        min_local=args.min_local,
        global_threshold=args.global_threshold,
        min_spot_size=args.min_spot_size,
        max_spot_size=args.max_spot_size,
        model=args.model,
        threshold=args.threshold,
        device=args.device,
        threads=args.threads,
        precision=args.precision,
        ice_rings=args.ice_rings,
        beamstop_shadow=args.beamstop_shadow,
        min_spot_snr=args.min_spot_snr,
        ring_background=args.ring_background,
        large_spots=args.large_spots,
        ice_context=args.ice_context,
        lattice_search=args.lattice_search,
    )
    if args.threads is None:
        del options["threads"]  # workers default to one thread each, a single process to torch's setting
    geometry, estimate = spot_geometry(img, beam_center, frame=frames[0])
    if beam_center != "header":  # resolved once here, reported, and used for every frame
        f, s = geometry.beam_center
        how = (f"estimated on frame {frames[0]} ({estimate.method}, ± {estimate.uncertainty_px:.2f} px, "
               f"tilt {estimate.tilt_deg:.2f}°)" if estimate is not None else "given")
        if not args.quiet:
            print(f"{args.file}: beam centre {f:.2f}, {s:.2f} px, {how}", file=sys.stderr)

    # each frame's result is printed (or kept, for --json) as soon as it is in, in frame order
    kept, shown, counts = [], [], []
    if args.summary and not (args.json or args.jsonl):
        print(_format_summaries(args.file, []), flush=True)
    with tqdm_progress("spots", disable=args.quiet or args.json or args.jsonl or None) as bar:
        for f, _, table in _frame_tables(img, frames, geometry, args.nproc, bar, None, options):
            if args.summary:
                summary = frame_summary(f, table)
                if args.jsonl:
                    print(json.dumps(summary), flush=True)
                elif args.json:
                    kept.append(summary)
                else:
                    print(_format_summaries(None, [summary]), flush=True)
                    kept.append(summary)
                continue
            rows = [{"frame": int(f), **row} for row in table.rows()]
            if args.jsonl:
                sys.stdout.write("".join(json.dumps(r) + "\n" for r in rows))
                sys.stdout.flush()
            elif args.json:
                kept.extend(rows)
            else:
                print(f"{args.file} frame {f}: {len(rows)} spots", flush=True)
                counts.append(len(rows))
                if sum(counts) <= 50:
                    shown.extend(rows)
    if args.json:
        json.dump(kept, sys.stdout)
        sys.stdout.write("\n")
    elif args.summary and not args.jsonl and len(kept) > 1:
        print(_format_sweep(kept))
    elif not args.summary and not args.jsonl and 0 < sum(counts) <= 50:
        print(f"{'frame':>5} {'x':>9} {'y':>9} {'intensity':>11} {'size':>5} {'d':>7}")
        for s in shown:
            d = "" if s["d"] is None else f"{s['d']:.2f}"
            print(f"{s['frame']:>5} {s['x']:9.2f} {s['y']:9.2f} {s['intensity']:11.1f} {s['size']:>5} {d:>7}")
    return 0
