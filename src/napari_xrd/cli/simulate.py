"""``napari-xrd simulate OUT``: write simulated training stills in the dataset format."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate diffraction stills with ground truth into a dataset directory",
        description="Simulate random diffraction stills (spots, spot masks, geometry, anomaly labels) "
        "into a napari-xrd dataset directory. Deterministic for a seed, whatever --workers is.",
    )
    p.add_argument("out", metavar="OUT", help="dataset directory (created or appended to)")
    p.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--detector", default="random",
                   help="pilatus6m, eiger16m, adsc_q4, arbitrary or random (default random)")
    p.add_argument("--size", default="512",
                   help="binned training size: N (N x N pixels) or SLOWxFAST (e.g. 525x512); "
                   "0 for the detector's full size (default 512)")
    p.add_argument("--anomalies", default="random",
                   help="'random', 'none', or a comma-separated list of: background_ring, diffuse_scattering, "
                   "ice_ring, loop_scattering, non_uniform_detector, strong_background, artifact")
    p.add_argument("--style", default="random", choices=["random", "realistic", "flat", "binary"],
                   help="background style (default random: 70%% realistic, 20%% flat, 10%% binary)")
    p.add_argument("--crystal", default="random",
                   help="random, lysozyme, thermolysin, trypsin, insulin or c2_monoclinic")
    p.add_argument("--beam-center-range", type=float, default=5.0, metavar="MM",
                   help="beam centre within +-MM of the detector centre (default 5)")
    p.add_argument("--max-tilt", type=float, default=3.0, metavar="DEG", help="pitch and yaw within +-DEG (default 3)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--examples-per-shard", type=int, default=64)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _parse_size(text: str):
    parts = str(text).lower().split("x")
    try:
        sizes = [int(v) for v in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1 and sizes[0] == 0:
        return None
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise ValueError(f"--size must be N, SLOWxFAST or 0 (full size), got {text!r}")
    return (sizes[0], sizes[-1])


def run(args) -> int:
    from napari_xrd.core.progress import tqdm_progress
    from napari_xrd.core.simulate import ANOMALY_CLASSES, COMMON_CRYSTALS
    from napari_xrd.core.simulate.generate import write_simulated_dataset

    if args.n < 0:
        raise ValueError("--n must be non-negative")
    shape = _parse_size(args.size)
    anomalies = args.anomalies.strip()
    if anomalies not in ("random", "none"):
        names = [a.strip() for a in anomalies.split(",") if a.strip()]
        bad = [a for a in names if a not in ANOMALY_CLASSES]
        if bad:
            raise ValueError(f"unknown anomaly class(es) {bad}; known: {', '.join(ANOMALY_CLASSES)}")
        anomalies = names
    if args.crystal not in ("random", *COMMON_CRYSTALS):
        raise ValueError(f"unknown crystal {args.crystal!r}; known: random, {', '.join(COMMON_CRYSTALS)}")
    options = dict(
        detector=None if args.detector == "random" else args.detector,
        shape=shape,
        anomalies=anomalies,
        style=None if args.style == "random" else args.style,
        crystal=args.crystal,
        beam_center_range_mm=args.beam_center_range,
        max_tilt_deg=args.max_tilt,
    )
    if options["detector"] is not None and options["detector"] != "arbitrary":
        from napari_xrd.core.detectors import get_detector

        options["detector"] = get_detector(options["detector"]).name
    with tqdm_progress("simulate", disable=args.quiet or None) as bar:
        n = write_simulated_dataset(args.out, args.n, seed=args.seed, workers=args.workers,
                                    examples_per_shard=args.examples_per_shard, progress=bar, **options)
    print(f"wrote {n} simulated images to {args.out}")
    return 0
