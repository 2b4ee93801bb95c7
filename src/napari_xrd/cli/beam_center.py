"""``napari-xrd beam-center FILE [--frame N] [--json]``: beam centre and tilt from the image.

Prints the estimated beam centre ``(fast, slow)`` in pixels (DIALS corner
convention: the first pixel's centre is ``(0.5, 0.5)``) and mm, pitch, yaw,
tilt and tilt direction in degrees, the centre's 1-σ uncertainty, which
method answered, and the header's centre for comparison.  The header centre
is never trusted; its distance, wavelength and pixel size are used.
"""

from __future__ import annotations

import json
import math

from napari_xrd.core.beam_center import METHODS

__all__ = ["add_parser", "run", "beam_center_of_file"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "beam-center",
        help="estimate beam centre and detector tilt from the image itself",
        description="Estimate the beam centre (DIALS corner convention, fast/slow pixels) and detector "
        "tilt of one frame from its rings and the centrosymmetry of its spots.",
    )
    p.add_argument("file", metavar="FILE", help="diffraction image (CBF, SMV .img, NeXus, TIFF, .npy)")
    p.add_argument("--frame", type=int, default=0, help="frame index for multi-frame files (default 0)")
    p.add_argument("--method", default="auto", choices=list(METHODS))
    p.add_argument("--no-tilt", action="store_true", help="hold pitch and yaw at zero")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=run)


def beam_center_of_file(path, *, frame: int = 0, method: str = "auto", fit_tilt: bool = True, progress=None):
    """Open ``path`` and estimate the beam centre of one frame.

    Returns
    -------
    result : BeamCenterResult
    header : DetectorGeometry or None
        The file's own geometry, for comparison.
    """
    import numpy as np

    from napari_xrd.core.beam_center import estimate_beam_center
    from napari_xrd.core.io import open_image

    img = open_image(path)
    if not 0 <= frame < img.n_frames:
        raise ValueError(f"{path}: frame {frame} out of range (the file has {img.n_frames} frame(s))")
    data = np.asarray(img.frame(frame))
    result = estimate_beam_center(
        data, geometry=img.geometry, pixel_mask=img.pixel_mask, method=method, fit_tilt=fit_tilt, progress=progress
    )
    return result, img.geometry


def run(args) -> int:
    from napari_xrd.core.progress import tqdm_progress

    with tqdm_progress("beam-center", disable=True if args.json else None) as cb:
        result, header = beam_center_of_file(
            args.file, frame=args.frame, method=args.method, fit_tilt=not args.no_tilt, progress=cb
        )
    out = result.to_dict()
    out["file"] = str(args.file)
    out["frame"] = args.frame
    if header is not None:
        out["header_beam_center_px"] = list(header.beam_center)
        out["shift_from_header_px"] = math.hypot(
            result.beam_center_px[0] - header.beam_center[0], result.beam_center_px[1] - header.beam_center[1]
        )
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    f, s = result.beam_center_px
    print(f"{args.file} frame {args.frame}")
    print(f"  beam centre   {f:.2f}, {s:.2f} px (fast, slow; ±{result.uncertainty_px:.2f} px)")
    print(f"                {result.beam_center_mm[0]:.3f}, {result.beam_center_mm[1]:.3f} mm")
    if header is not None:
        print(f"  header centre {header.beam_center[0]:.2f}, {header.beam_center[1]:.2f} px "
              f"(estimate is {out['shift_from_header_px']:.2f} px away)")
    if result.tilt_determined:
        print(f"  tilt          {result.tilt_deg:.3f}° towards {result.tilt_direction_deg:.1f}° "
              f"(pitch {result.pitch_deg:.3f}°, yaw {result.yaw_deg:.3f}°, ±{result.tilt_uncertainty_deg:.3f}°)")
    else:
        print("  tilt          not determinable from this image (needs rings at two or more 2θ); reported as 0")
    print(f"  method        {result.method}")
    return 0
