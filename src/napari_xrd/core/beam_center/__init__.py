"""Beam centre and detector tilt from the diffraction image itself.

One entry point, :func:`estimate_beam_center`, combines

* a coarse start: the ResNet of :mod:`napari_xrd.core.models.resnet_center`
  (when its weights and torch are there), and the header's centre;
* :mod:`.radial`: the precise estimator, a fit of beam centre, pitch and yaw
  that makes the whole background (air scatter, water and ice rings, the
  halo around the beamstop) a function of 2θ once solid angle and
  polarisation are divided out; sub-pixel, with the tilt and an uncertainty
  from the curvature of its cost;
* :mod:`.lattice`: for frames whose background does not pin the centre,
  the Bragg spots of a still indexed without a known cell, then beam
  centre, tilt and cell refined on the spot positions (the lattice's origin
  is the beam);
* :mod:`.friedel`: Friedel pairs of spots (mates' rays are mirror images
  about the beam), fitted with the tilt; the centre of point symmetry of
  the pattern; :mod:`.beamstop`: the beamstop's disc;
* :mod:`.rings`: a fit of beam centre, pitch and yaw to traced rings
  (``method="rings"``, and in "auto" when the radial fit cannot run);
* :mod:`.heuristic`: the seed-004 baseline, available as ``method="heuristic"``.

The header's beam centre is never used as an answer, and only loosely as a
start: headers can be off by millimetres.  Its distance, wavelength and pixel
size are used.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from napari_xrd.core.geometry import DetectorGeometry

__all__ = ["BeamCenterResult", "estimate_beam_center", "METHODS"]

METHODS = ("auto", "radial", "lattice", "friedel", "rings", "resnet", "heuristic")

#: the spots are tried as well when the radial fit's centre is less sure than this (1-σ, pixels)
SPOT_CHECK_SIGMA_PX = 0.2

#: a centre from the spots (lattice or Friedel pairs) answers when this sure (1-σ, pixels)
SPOTS_MAX_SIGMA_PX = 1.0

#: ... and its spots sit this close to their predicted positions (rms, pixels)
SPOTS_MAX_RMS_PX = 1.5

#: brightest spots (after those on ice rings are dropped) that the spot-based fits use
MAX_SPOTS = 300

#: how far from a poor start (the seed-004 heuristic) the spots' fits look for the centre (mm)
SPOT_SEARCH_MM = 10.0

#: starting tilts tried (± this, degrees) when the lattice does not index from an unknown tilt
LATTICE_TILT_STEP_DEG = 1.5

#: how far from the start the Friedel pairs' vote looks for the centre (mm, at least)
FRIEDEL_SEARCH_MM = 10.0

#: robust z-score of the symmetry peak above which the pattern counts as centrosymmetric
MIN_SYMMETRY_Z = 8.0

#: Friedel pairs that a pair fit needs to answer
MIN_FRIEDEL_PAIRS = 8

#: ... and the fraction of the spots they must make up: a few chance pairs
#: (and a still's near-symmetry about where a zone axis meets the detector)
#: must not pass for the beam's mates
MIN_FRIEDEL_FRACTION = 0.1

#: detector tilt (deg) allowed for in the centre's uncertainty when the image cannot show it
TILT_PRIOR_DEG = 1.0

#: the ResNet's predicted σ is widened by this when it is the answer (its
#: calibration holds on its training renderer only)
RESNET_SIGMA_SCALE = 3.0

#: 1-σ of the seed-004 heuristic when it is the last resort, as a fraction of the detector's size
HEURISTIC_SIGMA_FRACTION = 0.03

#: how far from the header's beam centre the beamstop is looked for (mm), without a network start
HEADER_REACH_MM = 15.0

#: how far a beamstop may sit from the beam (mm, 1-σ): its centre's uncertainty as a beam centre
BEAMSTOP_ALIGNMENT_MM = 0.2

#: the radial fit answers when its centre is this sure (1-σ, pixels)
RADIAL_MAX_SIGMA_PX = 1.5

#: ... and its model explains this fraction of the binned image's variance
#: (a flat frame has nothing radial: its noise alone can look like a minimum)
RADIAL_MIN_CONTRAST = 0.2

#: ... and reports the tilt as determined when pitch and yaw are this sure (1-σ, degrees)
RADIAL_MAX_TILT_SIGMA_DEG = 0.3


def _fit_details(g: DetectorGeometry, center_sigma_px: float, tilt_sigma_deg: float, **extra) -> dict:
    """What one estimator found, for ``details``: centre, tilt, their 1σ, and ``extra``."""
    return {
        "beam_center_px": list(g.beam_center),
        "pitch_deg": g.pitch,
        "yaw_deg": g.yaw,
        "center_sigma_px": center_sigma_px,
        "tilt_sigma_deg": tilt_sigma_deg,
        **extra,
    }


def _ring_check(data, valid, start: DetectorGeometry, details: dict):
    """Rings traced about a radial fit's geometry and fitted with the tilt, as a cross-check.

    Returns ``(geometry, uncertainty_px, tilt_sigma_deg, True, "rings")``
    when at least two rings pin centre and tilt, else None.
    """
    from napari_xrd.core.beam_center.rings import refine_with_rings

    min_tt = math.atan(0.03 * max(data.shape) * start.pixel_size / start.distance)
    fit = refine_with_rings(data, valid, start, fit_tilt=True, recentre=False, min_two_theta=min_tt)
    if fit is None:
        return None
    details["rings"] = _fit_details(fit.geometry, fit.center_sigma_px, fit.tilt_sigma_deg,
                                    n_rings=len(fit.two_theta), rms_px=fit.rms_px)
    if len(fit.two_theta) < 2 or not fit.tilt_determined or not math.isfinite(fit.center_sigma_px):
        return None
    return fit.geometry, max(fit.center_sigma_px, 0.02), fit.tilt_sigma_deg, True, "rings"


def _beamstop_sigma(bs: dict, pixel_size: float) -> float:
    """1-σ of a beamstop disc's centre as the beam centre (pixels): its alignment and its fit."""
    return math.hypot(BEAMSTOP_ALIGNMENT_MM / pixel_size, bs["center_sigma_px"])


def _beamstop_firm(bs: dict, pixel_size: float) -> bool:
    """The disc's own fit is surer than its alignment: not a disc mostly hidden in a gap, nor a faint one."""
    return bs["center_sigma_px"] <= BEAMSTOP_ALIGNMENT_MM / pixel_size


def _spot_starts(geometry: DetectorGeometry, rad, bs, heuristic) -> list[tuple[DetectorGeometry, float, float, str]]:
    """Starts for the spot-based fits, in the order tried: ``(geometry, 1-σ, search radius, where from)`` (pixels).

    The beamstop's disc (within 3σ of its alignment and fit) when its fit is
    surer than its alignment (:func:`_beamstop_firm`), else a weak radial fit
    (3σ) when surer than a millimetre, else the seed-004 heuristic
    (``SPOT_SEARCH_MM``) and then, where the heuristic's start fails, a loose
    radial fit narrower than the heuristic's reach (such fits can be tens of
    pixels out on flat frames, so they do not replace the wide search).  A
    weaker disc (which may be a stretch of arm or a dark patch) comes last:
    the lattice's answer from it is the alias nearest it, so it answers with
    the disc's uncertainty, not its own.  The tilt comes from the radial fit
    where it pinned it to within a degree.
    """
    g = geometry
    px = geometry.pixel_size
    rad_ok = rad is not None and math.isfinite(rad.center_sigma_px) and rad.contrast >= RADIAL_MIN_CONTRAST
    if rad_ok and math.isfinite(rad.tilt_sigma_deg) and rad.tilt_sigma_deg < 1.0:
        g = g.replace(pitch=rad.geometry.pitch, yaw=rad.geometry.yaw)
    at_radial = g.replace(beam_center=rad.geometry.beam_center) if rad_ok else None
    if bs is not None and _beamstop_firm(bs, px):
        sigma = _beamstop_sigma(bs, px)
        return [(g.replace(beam_center=tuple(bs["beam_center_px"])), sigma, 3 * sigma + 2, "beamstop")]
    if rad_ok and rad.center_sigma_px < 1.0 / px:
        starts = [(at_radial, rad.center_sigma_px, max(3 * rad.center_sigma_px, 5.0), "radial")]
    else:
        starts = [(g.replace(beam_center=tuple(heuristic)), HEURISTIC_SIGMA_FRACTION * max(geometry.shape),
                   SPOT_SEARCH_MM / px, "heuristic")]
        if rad_ok and 3 * rad.center_sigma_px < SPOT_SEARCH_MM / px:
            starts.append((at_radial, rad.center_sigma_px, 3 * rad.center_sigma_px, "radial (loose)"))
    sigma = _beamstop_sigma(bs, px) if bs is not None else math.inf
    if 3 * sigma + 2 < SPOT_SEARCH_MM / px:
        # last, a weak disc: the lattice's centre nearest it, if no other
        # lies within its reach, answers with the disc's uncertainty (exact
        # where the disc is the beamstop's; no surer than the disc if not)
        starts.append((g.replace(beam_center=tuple(bs["beam_center_px"])), sigma, 3 * sigma + 2, "beamstop (weak)"))
    return starts


def _frame_spots(data, valid, start: DetectorGeometry, details: dict):
    """The brightest spots (at most ``MAX_SPOTS``) after likely ice grains are dropped; (n, 2) ``(fast, slow)``.

    Spotty ice rings: their grains are spots on no lattice and, on a frame
    with much ice, most of the spots; the likely grains (core.spots.ice, as
    the spot finder's ice_rings="auto") are dropped, and where they were
    many, the Bragg spots are looked for deeper.
    """
    from napari_xrd.core.beam_center.spots import find_spot_centroids
    from napari_xrd.core.spots.ice import flag_ice_ring_spots

    def ice(xy):
        if not len(xy):
            return np.zeros(0, bool)
        return flag_ice_ring_spots(np.atleast_1d(start.resolution_at(xy[:, 0], xy[:, 1])), mode="auto")

    spots = find_spot_centroids(data, valid, max_peaks=MAX_SPOTS)
    on_ice = ice(spots)
    if on_ice.sum() > 0.25 * len(spots):
        spots = find_spot_centroids(data, valid, max_peaks=3 * MAX_SPOTS)
        on_ice = ice(spots)
    spots = spots[~on_ice][:MAX_SPOTS]
    details["spots"] = {"n_spots": int(len(spots)), "n_on_ice_rings": int(on_ice.sum())}
    return spots


def _spot_estimate(data, valid, start: DetectorGeometry, radius: float, *, fit_tilt: bool, details: dict,
                   cancel=None, lattice: bool = True, pairs: bool = True, tilt_known: bool = True, spots=None):
    """Beam centre and tilt from the spots: Friedel pairs, else the still's lattice.

    ``spots`` are :func:`_frame_spots`' (found here when not given).  The
    pairs' vote looks the larger of 3 × ``radius`` and ``FRIEDEL_SEARCH_MM``
    from the start; the lattice, ``radius``.

    Returns ``(geometry, uncertainty_px, tilt_sigma_deg, tilt_determined,
    method)`` for an answer within ``SPOTS_MAX_SIGMA_PX``, else None; what
    each fit found goes into ``details``.
    """
    from napari_xrd.core.beam_center.friedel import friedel_pair_geometry
    from napari_xrd.core.beam_center.lattice import lattice_beam_center
    from napari_xrd.core.progress import check_cancel

    if spots is None:
        spots = _frame_spots(data, valid, start, details)
    check_cancel(cancel)
    if pairs:
        # the pairs' vote finds the centre from far: a wide search costs little
        fp = friedel_pair_geometry(spots, start, fit_tilt=fit_tilt,
                                   search_radius_px=max(3 * radius, FRIEDEL_SEARCH_MM / start.pixel_size))
        if fp is not None:
            details["friedel_pairs"] = {k: (list(v.beam_center) if k == "geometry" else v) for k, v in fp.items()}
            strong = (
                fp["n_pairs"] >= max(MIN_FRIEDEL_PAIRS, MIN_FRIEDEL_FRACTION * fp["n_spots"])
                and fp["rms_px"] <= SPOTS_MAX_RMS_PX
                and fp["center_sigma_px"] <= SPOTS_MAX_SIGMA_PX
            )
            if strong:
                tilt_ok = fit_tilt and fp["tilt_sigma_deg"] <= RADIAL_MAX_TILT_SIGMA_DEG
                return (fp["geometry"], max(fp["center_sigma_px"], 0.02), fp["tilt_sigma_deg"], tilt_ok,
                        "friedel pairs" if tilt_ok else "friedel pairs (tilt not determined)")
    check_cancel(cancel)
    if lattice:
        lat = lattice_beam_center(data, valid, start, spots=spots, fit_tilt=fit_tilt, search_radius_px=radius,
                                  max_starts=5 if radius < 20 else 8,
                                  tilt_search_deg=0.0 if tilt_known else LATTICE_TILT_STEP_DEG, cancel=cancel)
        if lat is not None:
            details["lattice"] = _fit_details(lat.geometry, lat.center_sigma_px, lat.tilt_sigma_deg, rms_px=lat.rms_px,
                                              n_indexed=lat.n_indexed, cell=[round(v, 2) for v in lat.cell])
            if lat.center_sigma_px <= SPOTS_MAX_SIGMA_PX:
                tilt_ok = fit_tilt and lat.tilt_sigma_deg <= RADIAL_MAX_TILT_SIGMA_DEG
                return (lat.geometry, max(lat.center_sigma_px, 0.02), lat.tilt_sigma_deg, tilt_ok,
                        "lattice" if tilt_ok else "lattice (tilt not determined)")
    return None


@dataclass
class BeamCenterResult:
    """What :func:`estimate_beam_center` found.

    Attributes
    ----------
    beam_center_px : (float, float)
        ``(fast, slow)`` pixels, corner convention (first pixel's centre is
        ``(0.5, 0.5)``).
    beam_center_mm : (float, float)
        Same point in mm from the corner of the first pixel.
    pitch_deg, yaw_deg : float
        Detector rotations about its fast and slow axes (see
        :mod:`napari_xrd.core.geometry` for signs); 0 when not determined.
    tilt_deg, tilt_direction_deg : float
        Angle between beam and detector normal; direction ``atan2(slow,
        fast)`` towards which the detector comes nearest the sample.
    uncertainty_px : float
        1-σ uncertainty of the beam centre, pixels.
    tilt_uncertainty_deg : float or None
        1-σ uncertainty of pitch/yaw; None when the tilt was not determinable
        from this image (then pitch and yaw are reported as 0).
    tilt_determined : bool
    method : str
        Which estimator gave the answer, e.g. ``"rings"``, ``"friedel"``.
    geometry : DetectorGeometry
        The input geometry with the estimated centre and tilt.
    details : dict
        Per-stage numbers (coarse centres, ring count, residuals, timings).
    """

    beam_center_px: tuple[float, float]
    beam_center_mm: tuple[float, float]
    pitch_deg: float
    yaw_deg: float
    tilt_deg: float
    tilt_direction_deg: float
    uncertainty_px: float
    tilt_uncertainty_deg: float | None
    tilt_determined: bool
    method: str
    geometry: DetectorGeometry
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-friendly dict (the CLI prints this)."""

        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, (np.floating, np.integer)):
                return clean(v.item())
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            return v

        return clean(
            {
                "beam_center_px": list(self.beam_center_px),
                "beam_center_mm": list(self.beam_center_mm),
                "pitch_deg": self.pitch_deg,
                "yaw_deg": self.yaw_deg,
                "tilt_deg": self.tilt_deg,
                "tilt_direction_deg": self.tilt_direction_deg,
                "uncertainty_px": self.uncertainty_px,
                "tilt_uncertainty_deg": self.tilt_uncertainty_deg,
                "tilt_determined": self.tilt_determined,
                "method": self.method,
                "details": self.details,
            }
        )


def _default_geometry(shape) -> DetectorGeometry:
    from napari_xrd.core.detectors import identify_detector

    det = identify_detector(tuple(shape))
    pixel = det.pixel_size if det is not None else 0.1
    return DetectorGeometry(
        shape=tuple(shape), pixel_size=pixel, distance=200.0, beam_center=(shape[1] / 2, shape[0] / 2), wavelength=1.0
    )


def _resnet(data, valid, *, model="default"):
    """ResNet coarse estimate, or None when torch or the weights are missing."""
    from napari_xrd.core.models.weights import WeightsError, find_model

    try:
        find_model(model, task="beam-center")
    except WeightsError:
        return None
    try:
        import torch

        from napari_xrd.core.models.resnet_center import decode_outputs
        from napari_xrd.core.models.weights import load_model
        from napari_xrd.core.training.beam_center import model_input
    except ImportError:
        return None
    try:
        net, card = load_model(model, task="beam-center", device="cpu")
    except WeightsError:
        return None
    size = int(card.card.get("config", {}).get("size", 128))
    x = model_input(data, valid=valid, size=size)
    # one small image: a single thread is faster than waking a pool (and far
    # faster when other work keeps the cores busy)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.inference_mode():
            out = net(torch.from_numpy(x)[None, None]).numpy()[0]
    finally:
        torch.set_num_threads(threads)
    res = decode_outputs(out, data.shape)
    res["model"] = card.name
    return res


def _result(geometry, *, uncertainty, tilt_sigma, tilt_ok, method, details) -> BeamCenterResult:
    g = geometry if tilt_ok else geometry.replace(pitch=0.0, yaw=0.0)
    return BeamCenterResult(
        beam_center_px=tuple(float(v) for v in g.beam_center),
        beam_center_mm=tuple(float(v) for v in g.beam_center_mm),
        pitch_deg=float(g.pitch),
        yaw_deg=float(g.yaw),
        tilt_deg=float(g.tilt_deg),
        tilt_direction_deg=float(g.tilt_direction_deg),
        uncertainty_px=float(uncertainty),
        tilt_uncertainty_deg=float(tilt_sigma) if tilt_ok else None,
        tilt_determined=bool(tilt_ok),
        method=method,
        geometry=g,
        details=details,
    )


def estimate_beam_center(
    image,
    *,
    geometry: DetectorGeometry | None = None,
    pixel_mask=None,
    method: str = "auto",
    model: str = "default",
    fit_tilt: bool = True,
    progress=None,
    cancel=None,
) -> BeamCenterResult:
    """Estimate beam centre and detector tilt from one frame.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        One frame (counts); negative values are treated as masked.
    geometry : DetectorGeometry, optional
        Header geometry: its distance, wavelength and pixel size are used, its
        beam centre only as a loose start for the ResNet-free path.  Without
        it a catalogue pixel size (or 0.1 mm), 200 mm and 1 Å are assumed,
        which affects the tilt's scale but not the centre.
    pixel_mask : (n_slow, n_fast) array_like, optional
        Non-zero where a pixel is not a measurement (gaps, dead, hot...).
    method : {"auto", "radial", "lattice", "friedel", "rings", "resnet", "heuristic"}
        ``"auto"``: coarse start (ResNet if available), then the radial
        background fit; when the background does not pin the centre (flat
        or empty frames), the Bragg spots: the still's lattice indexed and
        refined (``"lattice"``), else Friedel pairs of spots with the tilt
        (``"friedel"``); then the beamstop's shadow, and weak guesses
        (symmetry centre, network, seed-004 heuristic) with honest
        uncertainties.  The others force one estimator.
    model : str
        Beam-centre model name or path for the ResNet (``"default"``).
    fit_tilt : bool
        Fit pitch and yaw to the rings (otherwise held at 0).
    progress, cancel : callables, optional
        See :mod:`napari_xrd.core.progress`.

    Returns
    -------
    BeamCenterResult

    Examples
    --------
    >>> from napari_xrd.core.training.beam_center import render_frame
    >>> g = DetectorGeometry((400, 400), 0.5, 150.0, (205.3, 193.8), 1.0)
    >>> img, mask = render_frame(g, water=1.0, n_spots=50, gaps=False, seed=1)
    >>> r = estimate_beam_center(img, geometry=g.replace(beam_center=(200, 200)), pixel_mask=mask)
    >>> bool(abs(r.beam_center_px[0] - 205.3) < 1 and abs(r.beam_center_px[1] - 193.8) < 1)
    True
    """
    from napari_xrd.core.beam_center._common import check_image
    from napari_xrd.core.beam_center.beamstop import find_beamstop
    from napari_xrd.core.beam_center.friedel import _shadow, centrosymmetry_center
    from napari_xrd.core.beam_center.heuristic import heuristic_beam_center
    from napari_xrd.core.beam_center.rings import refine_with_rings
    from napari_xrd.core.progress import check_cancel, report

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    data, valid = check_image(image, pixel_mask)
    if geometry is None:
        geometry = _default_geometry(data.shape)
        assumed = True
    else:
        assumed = False
        if tuple(geometry.shape) != data.shape:
            raise ValueError(f"geometry shape {geometry.shape} does not match image shape {data.shape}")
    geometry = geometry.replace(pitch=0.0, yaw=0.0)
    details: dict = {"assumed_geometry": assumed, "header_beam_center_px": list(geometry.beam_center)}
    timings: dict = {}
    t0 = time.perf_counter()

    if method == "heuristic":
        c, d = heuristic_beam_center(data, pixel_mask=(~valid).astype(np.uint8))
        details.update(d)
        return _result(geometry.replace(beam_center=c), uncertainty=10.0, tilt_sigma=None, tilt_ok=False,
                       method="heuristic", details=details)

    report(progress, 0, 4, "coarse start")
    nn = None
    if method in ("auto", "resnet"):
        nn = _resnet(data, valid, model=model)
        timings["resnet_s"] = time.perf_counter() - t0
        if nn is not None:
            details["resnet"] = nn
        elif method == "resnet":
            raise ValueError("no beam-center model available (weights missing or torch not installed)")
    if method == "resnet":
        g = geometry.replace(beam_center=nn["beam_center_px"], pitch=nn["pitch_deg"], yaw=nn["yaw_deg"])
        return _result(g, uncertainty=nn["center_sigma_px"], tilt_sigma=nn["tilt_sigma_deg"], tilt_ok=True,
                       method="resnet", details=details)
    check_cancel(cancel)

    shadow = _shadow(data, valid)
    valid_ns = valid & ~shadow
    rad = None
    if method in ("auto", "radial"):
        report(progress, 1, 4, "radial background fit")
        from napari_xrd.core.beam_center.radial import fit_radial_background

        t1 = time.perf_counter()
        starts = []
        if nn is not None and nn["center_sigma_px"] < 0.1 * max(data.shape):
            starts.append(tuple(nn["beam_center_px"]))
        rad = fit_radial_background(data, geometry=geometry, valid=valid_ns, fit_tilt=fit_tilt, starts=starts,
                                    cancel=cancel)
        check_cancel(cancel)
        timings["radial_s"] = time.perf_counter() - t1
        if rad is not None:
            details["radial"] = _fit_details(
                rad.geometry, rad.center_sigma_px, rad.tilt_sigma_deg,
                contrast=rad.contrast,
                chi2=rad.chi2,
                quadrant_spread_px=rad.quadrant_spread_px,
                non_radial=rad.non_radial,
                blocks=rad.n_blocks,
                block_px=rad.factor,
            )
            ok = (
                math.isfinite(rad.center_sigma_px)
                and rad.center_sigma_px <= RADIAL_MAX_SIGMA_PX
                and rad.contrast >= RADIAL_MIN_CONTRAST
            )
            if ok or method == "radial":
                tilt_ok = fit_tilt and math.isfinite(rad.tilt_sigma_deg) and (
                    rad.tilt_sigma_deg <= RADIAL_MAX_TILT_SIGMA_DEG
                )
                unc = max(rad.center_sigma_px, 0.02)
                if rad.sharp:
                    # the sharp-ring pass's σ comes from ring gradients that
                    # grains (spotty ice) make jagged: where leaving a
                    # quadrant out moves the coarse fit far, it claims too
                    # much (1.85 px off at σ 0.06 px on a development frame
                    # whose coarse centres spread by 1.7 px).  (Whether the
                    # answer is radial because "auto" chose it or because it
                    # was asked for, it is as sure.)
                    unc = max(unc, 0.5 * rad.quadrant_spread_px)
                best = (rad.geometry, unc, rad.tilt_sigma_deg, tilt_ok,
                        "radial" if tilt_ok else "radial (tilt not determined)")
                if method == "auto" and unc > SPOT_CHECK_SIGMA_PX:
                    # a smooth background pins the centre less well than its
                    # curvature says (centre and tilt trade off along a
                    # valley): the spots, where they index or pair, do better
                    report(progress, 2, 4, "spots")
                    t1 = time.perf_counter()
                    radius = max(3 * unc + 2.0, 5.0)
                    spot = _spot_estimate(data, valid_ns, rad.geometry, radius, fit_tilt=fit_tilt,
                                          details=details, cancel=cancel)
                    timings["spots_s"] = time.perf_counter() - t1
                    if spot is not None and spot[1] < unc:
                        d = math.dist(spot[0].beam_center, rad.geometry.beam_center)
                        details["radial"]["distance_to_spots_px"] = d
                        best = spot
                    elif rad.sharp and fit_tilt:
                        # sharp rings (ice) the radial fit had to clip grains
                        # of: their traced ridges can pin the centre better
                        check_cancel(cancel)
                        t1 = time.perf_counter()
                        rings = _ring_check(data, valid_ns, rad.geometry, details)
                        timings["rings_s"] = time.perf_counter() - t1
                        if rings is not None:
                            d = math.dist(rings[0].beam_center, rad.geometry.beam_center)
                            details["radial"]["distance_to_rings_px"] = d
                            if d > 2.0 * math.hypot(rings[1], unc):
                                # they disagree: the surer by its honest
                                # uncertainty (the radial fit's widened by its
                                # quadrant spread) answers
                                if rings[1] < unc:
                                    best = rings
                            elif rings[1] < rad.center_sigma_px:
                                # they agree: the more precise by its own
                                # curvature
                                best = rings
                            else:
                                # (the radial fit, on smooth ice rings; as
                                # sure as the rings and their distance allow)
                                best = (*best[:1], min(unc, max(rings[1], d)), *best[2:])
                timings["total_s"] = time.perf_counter() - t0
                details["timings"] = timings
                report(progress, 4, 4, "done")
                g, unc, tsig, tilt_ok, name = best
                return _result(g, uncertainty=unc, tilt_sigma=tsig, tilt_ok=tilt_ok, method=name, details=details)
        elif method == "radial":
            raise ValueError("too few valid pixels for the radial background fit")
    check_cancel(cancel)

    spot = None
    heur = frame_spots = None
    if method in ("auto", "lattice", "friedel"):
        report(progress, 1, 4, "spots")
        t1 = time.perf_counter()
        heur, _ = heuristic_beam_center(data, pixel_mask=(~valid).astype(np.uint8))
        details["heuristic_beam_center_px"] = list(heur)
        first = _spot_starts(geometry, rad, None, heur)[0]
        frame_spots = _frame_spots(data, valid_ns, first[0], details)
        if method != "lattice":
            # Friedel pairs first: their vote finds the centre from far (a
            # rotation frame's spots pair about the beam), and where they
            # answer, the beamstop's disc is not needed
            spot = _spot_estimate(data, valid_ns, first[0], first[2], fit_tilt=fit_tilt, details=details,
                                  cancel=cancel, lattice=False, spots=frame_spots)
        timings["spots_s"] = time.perf_counter() - t1
    if spot is None:
        report(progress, 1, 4, "beamstop")
        t1 = time.perf_counter()
        if nn is not None and nn["center_sigma_px"] < 0.05 * max(data.shape):
            near, reach = nn["beam_center_px"], max(6 * nn["center_sigma_px"], 10.0 / geometry.pixel_size)
        else:
            # headers can be off by several millimetres, rarely by more than 15
            near, reach = geometry.beam_center, HEADER_REACH_MM / geometry.pixel_size
        bs = find_beamstop(data, valid, pixel_size=geometry.pixel_size, near=near, search_radius_px=reach)
        if bs is not None:
            details["beamstop"] = bs
        timings["beamstop_s"] = time.perf_counter() - t1
    else:
        bs = None
    # Bragg spots: index the still's lattice (its origin is the beam), else
    # Friedel pairs from the beamstop's disc; both refine centre and tilt
    # from spot positions
    if spot is None and method in ("auto", "lattice", "friedel"):
        report(progress, 2, 4, "spots")
        t1 = time.perf_counter()
        # the lattice fixes the centre only modulo the reflections on the Ewald
        # sphere (see .lattice): from a far start it answers only where no
        # other centre within the search fits as well
        use_lattice = method in ("auto", "lattice")
        for i, (spot_start, start_sigma, spot_radius, spot_source) in enumerate(
                _spot_starts(geometry, rad, bs, heur)):
            details["spot_start"] = {"beam_center_px": list(spot_start.beam_center), "sigma_px": start_sigma,
                                     "radius_px": spot_radius, "from": spot_source}
            # (the pairs were tried from the first start without the disc)
            pairs = method != "lattice" and i == 0 and spot_source == "beamstop"
            spot = _spot_estimate(data, valid_ns, spot_start, spot_radius, fit_tilt=fit_tilt, details=details,
                                  cancel=cancel, lattice=use_lattice, pairs=pairs, tilt_known=not fit_tilt,
                                  spots=frame_spots)
            if "lattice" in details:
                details["lattice"].setdefault("start_sigma_px", start_sigma)
            if spot is not None and spot_source == "beamstop (weak)":
                g_s, unc_s, tsig_s, tilt_s, name_s = spot
                spot = (g_s, max(unc_s, start_sigma), tsig_s, tilt_s, f"{name_s}, nearest a weak beamstop disc")
            if spot is not None:
                break
        timings["spots_s"] = timings.get("spots_s", 0.0) + time.perf_counter() - t1
    if method == "lattice" and (spot is None or not spot[4].startswith("lattice")):
        raise ValueError("the spots do not index as one lattice; try method='auto'")
    if spot is not None:
        timings["total_s"] = time.perf_counter() - t0
        details["timings"] = timings
        report(progress, 4, 4, "done")
        g, unc, tsig, tilt_ok, name = spot
        return _result(g, uncertainty=unc, tilt_sigma=tsig, tilt_ok=tilt_ok, method=name, details=details)
    # the centre of point symmetry of the whole pattern: where the spots gave no answer
    report(progress, 3, 4, "symmetry centre")
    t1 = time.perf_counter()
    start = radius = None
    if nn is not None and nn["center_sigma_px"] < 0.05 * max(data.shape):
        start, radius = nn["beam_center_px"], max(30.0, 6 * nn["center_sigma_px"])
    sym, sd = centrosymmetry_center(
        data, pixel_mask=~valid_ns, start=start, search_radius_px=radius, remove_shadow=False
    )
    timings["friedel_s"] = time.perf_counter() - t1
    details["friedel"] = {"beam_center_px": list(sym), **sd}
    symmetric = sd["coarse_z"] >= MIN_SYMMETRY_Z
    # spotty ice seen by the spot search (its shells crowded) means rings to
    # trace even where the radial fit failed (grains it had to clip, a false
    # minimum); they start from the beamstop's disc and must agree with it.
    # Otherwise the ring search starts from the symmetry centre if the
    # pattern is clearly symmetric, else from the network's guess (arms, dead
    # patches and pedestals make a disc alone unreliable as a start)
    icy = method == "auto" and bs is not None and details.get("spots", {}).get("n_on_ice_rings", 0) >= 20
    if icy:
        start_c = tuple(bs["beam_center_px"])
    elif symmetric or nn is None:
        start_c = sym
    elif nn is not None and nn["center_sigma_px"] < 0.05 * max(data.shape):
        start_c = nn["beam_center_px"]
    else:
        start_c = sym
    check_cancel(cancel)

    fit = None
    # traced rings are radial structure that the radial fit has already used:
    # when it could not pin the centre, ring tracing does not either (on the
    # benchmark it never answered after a failed radial fit), so "auto" traces
    # rings only when the radial fit could not run, or the spots saw ice
    if method == "rings" or (method == "auto" and rad is None) or icy:
        report(progress, 3, 4, "rings")
        t2 = time.perf_counter()
        # rings must lie outside the beamstop's shadow (its edge looks like one)
        r_min = 2.0 * bs["radius_px"] if bs is not None else 0.0
        r_min = max(r_min, 0.03 * max(data.shape))
        min_tt = math.atan(r_min * geometry.pixel_size / geometry.distance)
        fit = refine_with_rings(
            data, valid_ns, geometry.replace(beam_center=start_c), fit_tilt=fit_tilt, min_two_theta=min_tt
        )
        timings["rings_s"] = time.perf_counter() - t2
        if fit is not None:
            details["rings"] = {
                "n_rings": len(fit.two_theta),
                "d_spacing_A": [geometry.wavelength / (2 * math.sin(t / 2)) for t in fit.two_theta],
                "points": fit.n_points,
                "rms_px": fit.rms_px,
                "center_sigma_px": fit.center_sigma_px,
                "tilt_sigma_deg": fit.tilt_sigma_deg,
            }
    report(progress, 3, 4, "deciding")
    timings["total_s"] = time.perf_counter() - t0
    details["timings"] = timings
    # a lone ring must be seen all round (2/3 of the sectors) to count
    ring_ok = (
        fit is not None
        and np.isfinite(fit.center_sigma_px)
        and (len(fit.two_theta) >= 2 or sum(fit.n_points) >= 120)
        and fit.center_sigma_px < min(5.0, max(2.5, sd["uncertainty_px"]))
    )
    if ring_ok and icy:
        # the disc sits on the beam to within its alignment: rings far from it are not the beam's
        bs_sigma = _beamstop_sigma(bs, geometry.pixel_size)
        ring_ok = math.dist(fit.geometry.beam_center, bs["beam_center_px"]) < 3 * bs_sigma + 2
    if ring_ok:
        shift = math.hypot(fit.geometry.beam_center[0] - sym[0], fit.geometry.beam_center[1] - sym[1])
        details["rings"]["shift_from_symmetry_centre_px"] = shift
        unc = max(fit.center_sigma_px, 0.05)
        if fit.tilt_determined and fit.tilt_sigma_deg > 0.25:
            unc = max(unc, fit.tilt_sigma_deg * 3.0)  # centre of a poorly tilted fit is less sure
        if not fit.tilt_determined:
            # a single ring's centre sits D tan²(2θ) tan(τ) from the beam on a
            # detector tilted by τ; allow for an unseen tilt of TILT_PRIOR_DEG
            tt = max(fit.two_theta)
            bias = geometry.distance * math.tan(tt) ** 2 * math.tan(math.radians(TILT_PRIOR_DEG)) / geometry.pixel_size
            unc = math.hypot(unc, bias)
        return _result(
            fit.geometry,
            uncertainty=unc,
            tilt_sigma=fit.tilt_sigma_deg,
            tilt_ok=fit.tilt_determined,
            method="rings" if fit.tilt_determined else "rings (tilt not determined)",
            details=details,
        )
    if method == "rings":
        raise ValueError("no usable powder or water ring found in the image; try method='friedel'")
    report(progress, 4, 4, "done")
    if bs is not None and _beamstop_firm(bs, geometry.pixel_size):
        # the beamstop sits on the beam to within its alignment
        unc = _beamstop_sigma(bs, geometry.pixel_size)
        if rad is not None and math.isfinite(rad.center_sigma_px) and rad.contrast >= 0.05:
            # a radial fit too faint to answer still says where the beam is
            # not: a disc far from it (a dark patch, another shadow) is unsure
            d = math.dist(bs["beam_center_px"], rad.geometry.beam_center)
            details["beamstop"]["distance_to_radial_px"] = d
            if d > 3 * math.hypot(unc, rad.center_sigma_px):
                unc = max(unc, d)
        return _result(geometry.replace(beam_center=tuple(bs["beam_center_px"])), uncertainty=unc, tilt_sigma=None,
                       tilt_ok=False, method="beamstop", details=details)
    if method == "friedel":
        unc = max(sd["uncertainty_px"], 0.02 * max(data.shape))
        return _result(geometry.replace(beam_center=sym), uncertainty=unc, tilt_sigma=None,
                       tilt_ok=False, method="friedel (diffuse scatter only)", details=details)
    # nothing pins the centre well: the surest of the weak answers, with an
    # honest uncertainty
    weak = []
    diffuse = rad is None or rad.contrast >= 0.05
    if symmetric and diffuse:
        weak.append((sym, max(sd["uncertainty_px"], 0.02 * max(data.shape)), "friedel (diffuse scatter only)"))
    else:
        # spots alone: a still is nearly symmetric about where a zone axis meets
        # the detector, anywhere near the beam
        weak.append((sym, max(sd["uncertainty_px"], 0.1 * max(data.shape)), "friedel (weak)"))
    if nn is not None:
        # the network's σ is calibrated on its own training renderer; elsewhere its misses run to ~3σ
        weak.append((tuple(nn["beam_center_px"]), RESNET_SIGMA_SCALE * nn["center_sigma_px"],
                     "resnet (no rings, no beamstop, no pairs)"))
    # the seed-004 heuristic (beamstop rays, centres of mass): tens of pixels
    # (median 45 px, p95 175 px over benchmarks/bench_beam_center.py)
    if "heuristic_beam_center_px" in details:
        hf, hs = details["heuristic_beam_center_px"]
    else:
        (hf, hs), _ = heuristic_beam_center(data, pixel_mask=(~valid).astype(np.uint8))
    weak.append(((hf, hs), HEURISTIC_SIGMA_FRACTION * max(data.shape), "heuristic (no radial background, no beamstop)"))
    if bs is not None:
        # a disc mostly hidden (in a gap) or faint: its fit allows other centres too
        weak.append((tuple(bs["beam_center_px"]), _beamstop_sigma(bs, geometry.pixel_size), "beamstop (weak)"))
    if rad is not None and math.isfinite(rad.center_sigma_px) and rad.contrast >= RADIAL_MIN_CONTRAST:
        # a flat background constrains the radial fit only along a centre-tilt valley
        weak.append((tuple(rad.geometry.beam_center), max(3.0 * rad.center_sigma_px, 5.0), "radial (weak)"))
    lat = details.get("lattice")
    if lat is not None and "start_sigma_px" in lat and math.isfinite(lat["center_sigma_px"]):
        # a lattice that indexes but allows other centres within the search
        # (reflections on the Ewald sphere whose spots are unseen): of the
        # centres consistent with every spot, the one nearest the start.
        # When the truth is inside the search it is one of those centres, so
        # the answer is no further from it than twice the start's error, and
        # exact when the start is nearer the truth than half the centres'
        # spacing: no less sure than the start, preferred to it on a tie
        sigma = max(lat["start_sigma_px"], 1.0)
        details["lattice"]["nearest_other_centre_px"] = lat["center_sigma_px"]
        weak.insert(0, (tuple(lat["beam_center_px"]), sigma, "lattice (ambiguous: other centres fit the spots as well)"))
    c, unc, name = min(weak, key=lambda w: w[1])
    return _result(geometry.replace(beam_center=tuple(c)), uncertainty=unc, tilt_sigma=None, tilt_ok=False,
                   method=name, details=details)
