"""``napari-xrd info FILE [FILE...] [--json]``: what is in a diffraction file.

Prints shape, frames, dtype, the detector geometry in the DIALS convention
(beam centre ``(fast, slow)`` from the outer corner of the first pixel),
the pixel-mask summary, the resolution range over the detector and the
header values worth knowing.  Files that cannot be read get one line on
stderr each, and the exit status is 1.
"""

from __future__ import annotations

import json
import math
import sys

__all__ = ["add_parser", "image_summary", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "info",
        help="print shape, geometry and mask of diffraction image files",
        description="Print shape, frames, dtype, detector geometry (DIALS convention), "
        "pixel-mask summary, resolution range and header values of each FILE.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="CBF, SMV (.img), NeXus master, TIFF or .npy file")
    p.add_argument("--json", action="store_true", help="print one JSON document (a list, one entry per file)")
    p.add_argument("--series", action="store_true", help="open the whole numbered series each FILE belongs to")
    p.set_defaults(func=run)


def _finite(value):
    return value if value is None or math.isfinite(value) else None


def image_summary(image) -> dict:
    """:meth:`DiffractionImage.info` plus mask reasons and resolution range.

    Returns
    -------
    dict
        JSON-serialisable; ``resolution_A`` is ``{"d_max": ..., "d_min":
        ...}`` in Å (``d_max`` None when the beam centre lies on the
        detector), None without geometry.
    """
    from napari_xrd.core.masks import describe_mask

    info = image.info()
    info["mask"] = None if image.pixel_mask is None else describe_mask(image.pixel_mask)
    if image.geometry is not None:
        d_max, d_min = image.geometry.d_range()
        info["resolution_A"] = {"d_max": _finite(d_max), "d_min": _finite(d_min)}
    else:
        info["resolution_A"] = None
    return info


def _text(info: dict) -> str:
    n, s, f = info["shape"]
    lines = [info["path"], f"  format      {info['format']}" + (
        f" ({info['metadata']['detector']})" if info["metadata"].get("detector") else "")]
    lines.append(f"  shape       {n} frame(s) x {s} slow x {f} fast, {info['dtype']}")
    g = info["geometry"]
    if g is None:
        lines.append("  geometry    none")
    else:
        bf, bs = g["beam_center_px"]
        mf, ms = g["beam_center_mm"]
        lines.append(f"  geometry    pixel {g['pixel_size_mm']:g} mm, distance {g['distance_mm']:g} mm, "
                     f"wavelength {g['wavelength_A']:g} A")
        lines.append(f"  beam centre (fast, slow) = ({bf:.2f}, {bs:.2f}) px = ({mf:.3f}, {ms:.3f}) mm "
                     "from the corner of the first pixel (DIALS)")
        r = info["resolution_A"]
        d_max = "inf" if r["d_max"] is None else f"{r['d_max']:.2f}"
        lines.append(f"  resolution  {d_max} - {r['d_min']:.2f} A")
    mask = info["mask"]
    lines.append("  mask        " + ("none" if not mask else ", ".join(f"{k} {v}" for k, v in mask.items())))
    skip = {"header", "detector", "warnings", "series"}
    for key, value in info["metadata"].items():
        if key not in skip and value is not None:
            lines.append(f"  {key}: {value}")
    if info["metadata"].get("series"):
        sr = info["metadata"]["series"]
        lines.append(f"  series      {sr['template']} ({sr['n_files']} files)")
    for warning in info["metadata"].get("warnings", []):
        lines.append(f"  warning     {warning}")
    return "\n".join(lines)


def run(args) -> int:
    from napari_xrd.core.io import open_image

    status = 0
    results = []
    for path in args.files:
        try:
            image = open_image(path, series=args.series or None)
            info = image_summary(image)
        except (ValueError, OSError) as exc:
            print(f"napari-xrd info: error: {exc}", file=sys.stderr)
            status = 1
            continue
        results.append(info)
        if not args.json:
            print(_text(info))
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return status
