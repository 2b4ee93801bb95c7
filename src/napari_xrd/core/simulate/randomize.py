"""Randomised stills for training, and napari's sample still.

:func:`random_still` draws every generator parameter from wide ranges so that
no model can take a shortcut through the background: a fifth of the images
have flat backgrounds without any ring, another tenth are spot-only binary
images, and the beam centre, tilt, distance, wavelength, crystal and detector
response all vary independently.  Background levels are drawn per native
detector pixel and scaled by the binned pixel area, so spot-to-background
contrast stays physical at training sizes.
"""

from __future__ import annotations

import math

import numpy as np

from napari_xrd.core.detectors import DETECTORS, DetectorModel, get_detector
from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.simulate.anomalies import ANOMALY_CLASSES
from napari_xrd.core.simulate.crystal import common_crystal, random_crystal, random_orientation
from napari_xrd.core.simulate.pipeline import simulate_still

__all__ = ["random_still", "sample_pilatus_still", "ANOMALY_PROBABILITIES", "random_geometry"]

#: Chance that :func:`random_still` injects each anomaly class when ``anomalies="random"``.
ANOMALY_PROBABILITIES = {
    "background_ring": 0.45,
    "diffuse_scattering": 0.2,
    "ice_ring": 0.25,
    "loop_scattering": 0.15,
    "non_uniform_detector": 0.2,
    "strong_background": 0.15,
    "artifact": 0.15,
}
_RING_LIKE = ("background_ring", "ice_ring", "loop_scattering", "diffuse_scattering")


def _loguniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _arbitrary_detector(rng) -> DetectorModel:
    pixel = float(rng.uniform(0.05, 0.2))
    n = int(rng.integers(1000, 3200))
    return DetectorModel("arbitrary", n, n, round(pixel, 4), n, n, 0, 0)


def random_geometry(
    rng: np.random.Generator,
    detector: DetectorModel,
    *,
    shape: tuple[int, int] | None = (512, 512),
    beam_center_range_mm: float = 5.0,
    max_tilt_deg: float = 3.0,
    distance_range_mm: tuple[float, float] = (100.0, 700.0),
    wavelength_range: tuple[float, float] = (0.7, 1.6),
) -> DetectorGeometry:
    """Random detector pose: centre within ±range mm of the detector centre, tilt within ±max on both axes."""
    g0 = detector.geometry(100.0, 1.0, shape=shape)
    n_slow, n_fast = g0.shape
    dx, dy = rng.uniform(-beam_center_range_mm, beam_center_range_mm, 2) / g0.pixel_size
    tilt = (0.0, 0.0) if rng.random() < 0.2 else tuple(rng.uniform(-max_tilt_deg, max_tilt_deg, 2))
    return detector.geometry(
        _loguniform(rng, *distance_range_mm),
        float(rng.uniform(*wavelength_range)),
        (n_fast / 2.0 + dx, n_slow / 2.0 + dy),
        pitch=float(tilt[0]),
        yaw=float(tilt[1]),
        shape=shape,
    )


def random_still(
    rng,
    *,
    detector: str | DetectorModel | None = None,
    shape: tuple[int, int] | None = (512, 512),
    anomalies="random",
    style: str | None = None,
    crystal=None,
    beam_center_range_mm: float = 5.0,
    max_tilt_deg: float = 3.0,
    distance_range_mm: tuple[float, float] = (100.0, 700.0),
    wavelength_range: tuple[float, float] = (0.7, 1.6),
    **overrides,
):
    """A still with every generator parameter drawn at random.

    Parameters
    ----------
    rng : numpy Generator or int
        Source of randomness (an int seeds a new Generator).
    detector : str or DetectorModel, optional
        Catalogue name ("pilatus6m", "eiger16m", "adsc_q4"), "arbitrary"
        (random square detector without gaps) or None for a random choice.
    shape : (n_slow, n_fast) or None
        Binned training size; None for the detector's full size.
    anomalies : "random", sequence of names, or "none"
        "random" injects each class with :data:`ANOMALY_PROBABILITIES`
        (rings and clouds only on realistic backgrounds); a sequence injects
        exactly those classes.
    style : {"realistic", "flat", "binary"}, optional
        Background style; random (70 / 20 / 10 %) by default.
    crystal : Crystal, optional
        Default: :func:`~napari_xrd.core.simulate.crystal.random_crystal`.
    beam_center_range_mm, max_tilt_deg, distance_range_mm, wavelength_range
        Ranges of the detector pose.
    **overrides
        Fixed values for any of :data:`~napari_xrd.core.simulate.DEFAULT_PARAMS`.

    Returns
    -------
    SimulatedStill
        ``params["random"]`` records the arguments of this call.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if detector is None:
        detector = str(rng.choice(list(DETECTORS) + ["arbitrary"]))
    if isinstance(detector, str):
        det = _arbitrary_detector(rng) if detector == "arbitrary" else get_detector(detector)
    else:
        det = detector
    geometry = random_geometry(
        rng, det, shape=shape, beam_center_range_mm=beam_center_range_mm, max_tilt_deg=max_tilt_deg,
        distance_range_mm=distance_range_mm, wavelength_range=wavelength_range,
    )
    if crystal is None:
        crystal = random_crystal(rng)
    if style is None:
        style = str(rng.choice(["realistic", "flat", "binary"], p=[0.7, 0.2, 0.1]))
    area = (geometry.pixel_size / det.pixel_size) ** 2  # binned pixel area in native pixels
    ccd = det.name == "adsc_q4" or (det.name == "arbitrary" and rng.random() < 0.5)
    p = {
        "style": style,
        "d_min": float(rng.uniform(1.2, 3.5)),
        "mosaicity_deg": _loguniform(rng, 0.02, 0.6),
        "bandpass": _loguniform(rng, 1e-4, 3e-3),
        "divergence_deg": _loguniform(rng, 0.005, 0.05),
        "spot_sigma_mm": float(rng.uniform(0.02, 0.08)),
        "psf_px": float(rng.uniform(0.3, 1.2)) / math.sqrt(area),
        "intensity_scale": _loguniform(rng, 300.0, 3e4),
        "air_photons": _loguniform(rng, 0.1, 5.0) * area,
        "air_decay_deg": float(rng.uniform(2.0, 8.0)),
        "solvent_photons": _loguniform(rng, 0.2, 20.0) * area,
        "solvent_falloff_d": float(rng.uniform(2.0, 4.0)),
        "flat_photons": (_loguniform(rng, 0.3, 40.0) * area) if style == "flat" else 0.0,
        "beamstop": bool(rng.random() < 0.85),
        "beamstop_radius_mm": float(rng.uniform(0.8, 2.5)),
        "beamstop_offset_px": tuple(float(v) for v in rng.normal(0.0, 0.15, 2) / geometry.pixel_size),
        "beamstop_arm_angle_deg": float(rng.uniform(-180, 180)),
        "beamstop_arm_width_mm": float(rng.uniform(0.6, 2.0)),
        "beamstop_transmission": float(rng.uniform(0.0, 0.05)),
        "dead_fraction": _loguniform(rng, 1e-5, 1e-3) if rng.random() < 0.6 else 0.0,
        "hot_fraction": _loguniform(rng, 1e-6, 1e-4) if rng.random() < 0.4 else 0.0,
    }
    if ccd:
        p.update(
            gain=float(rng.uniform(0.5, 2.5)),
            read_noise=float(rng.uniform(2.0, 15.0)) * math.sqrt(area),
            offset=float(rng.uniform(10.0, 100.0)),
            saturation=65535.0,
            marker_values=False,
            ccd_psf_px=float(rng.uniform(0.3, 1.0)) / math.sqrt(area) if area < 4 else 0.0,
        )
    else:
        markers = bool(rng.random() < 0.5)
        p.update(gain=1.0, read_noise=0.0, offset=0.0, saturation=float(2**20 - 1), marker_values=markers,
                 dtype="int32" if markers else "float32")
    p.update(overrides)

    if isinstance(anomalies, str) and anomalies == "random":
        allowed = ANOMALY_CLASSES if style == "realistic" else tuple(a for a in ANOMALY_CLASSES if a not in _RING_LIKE)
        if style == "binary":
            allowed = ()
        names = [a for a in allowed if rng.random() < ANOMALY_PROBABILITIES[a]]
    elif isinstance(anomalies, str):
        names = [] if anomalies in ("", "none") else [a.strip() for a in anomalies.split(",") if a.strip()]
    else:
        names = list(anomalies or [])
    seed = int(rng.integers(0, 2**63 - 1))
    result = simulate_still(geometry, crystal, seed=seed, detector=None if det.name == "arbitrary" else det,
                            anomalies=names, **p)
    result.params["random"] = {
        "detector": det.name,
        "detector_pixel_size": det.pixel_size,
        "shape": None if shape is None else list(shape),
        "style": style,
        "beam_center_range_mm": beam_center_range_mm,
        "max_tilt_deg": max_tilt_deg,
        "distance_range_mm": list(distance_range_mm),
        "wavelength_range": list(wavelength_range),
    }
    return result


def sample_pilatus_still(seed: int = 0):
    """napari's sample still: lysozyme on a full-size Pilatus 6M, with its truth.

    200 mm, 1.0 Å, beam centre 1.3 mm and -0.9 mm from the detector centre,
    pitch 0.4°, yaw -0.6°; water ring, beamstop with arm, module gaps (-1)
    and a few dead pixels (-2).  Takes about a second.

    Returns
    -------
    SimulatedStill
    """
    rng = np.random.default_rng(seed)
    det = get_detector("pilatus6m")
    geometry = det.geometry(
        200.0, 1.0, (det.n_fast / 2 + 1.3 / det.pixel_size, det.n_slow / 2 - 0.9 / det.pixel_size),
        pitch=0.4, yaw=-0.6,
    )
    crystal = common_crystal("lysozyme", orientation=random_orientation(rng), wilson_b=20.0,
                             structure_seed=int(rng.integers(0, 2**62)))
    return simulate_still(
        geometry, crystal, seed=seed, detector=det,
        anomalies={"background_ring": {"photons": 12.0, "d": 3.3, "sigma_s": 0.035}},
        d_min=1.6, mosaicity_deg=0.2, intensity_scale=6000.0, air_photons=4.0, solvent_photons=3.0,
        beamstop_arm_angle_deg=-60.0, dead_fraction=2e-5,
    )
