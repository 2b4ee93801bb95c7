"""The still-image pipeline: expected photons, read-out and ground truth.

See :mod:`napari_xrd.core.simulate` for the overview and the definition of
the truth (spot mask, spot SNR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.masks import DEAD, GAP, HOT
from napari_xrd.core.simulate import anomalies as _anom
from napari_xrd.core.simulate import background as _bg
from napari_xrd.core.simulate.anomalies import ANOMALY_CLASSES, label_vector
from napari_xrd.core.simulate.crystal import Crystal
from napari_xrd.core.simulate.still import predict_reflections, render_spots, spot_covariance

__all__ = [
    "DEFAULT_PARAMS",
    "GENERATOR_VERSION",
    "SPOT_DTYPE",
    "SimulatedStill",
    "simulate_still",
    "simulate_from_params",
]

GENERATOR_VERSION = "napari-xrd-simulate/1"

#: Parameters of :func:`simulate_still` and their defaults (units in the names or below).
DEFAULT_PARAMS = {
    "d_min": 1.8,  # crystal's diffraction limit, Å
    "mosaicity_deg": 0.15,  # FWHM
    "bandpass": 2e-4,  # FWHM of Δλ/λ
    "divergence_deg": 0.02,  # FWHM beam divergence
    "domain_size": None,  # mosaic domain size, Å (None: infinite)
    "min_partiality": 1e-3,
    "oscillation_deg": 0.0,  # 0: still; else rotation about rotation_axis during the exposure
    "rotation_axis": (1.0, 0.0, 0.0),  # lab frame
    "spot_sigma_mm": 0.04,  # beam footprint on the detector (σ)
    "psf_px": 0.4,  # detector point spread (σ, pixels of this image)
    "min_sigma_px": 0.5,
    "intensity_scale": 2000.0,  # photons of a full reflection with I = 1 and L·P = 1
    "polarization_fraction": 0.99,
    "style": "realistic",  # realistic | flat | binary
    "air_photons": 4.0,  # photons/pixel of air scatter extrapolated to 2θ = 0
    "air_decay_deg": 4.0,
    "solvent_photons": 3.0,  # photons/pixel of the diffuse solvent plateau at low angle
    "solvent_falloff_d": 2.7,  # Å where the solvent plateau has halved
    "flat_photons": 0.0,  # constant photons/pixel
    "beamstop": True,
    "beamstop_radius_mm": 1.5,
    "beamstop_offset_px": (0.0, 0.0),
    "beamstop_arm_angle_deg": 45.0,
    "beamstop_arm_width_mm": 1.0,
    "beamstop_transmission": 0.01,
    "noise": True,
    "gain": 1.0,  # ADU per photon
    "read_noise": 0.0,  # ADU
    "offset": 0.0,  # ADU
    "ccd_psf_px": 0.0,  # σ (pixels) of the CCD noise correlation between neighbours (spot blur: psf_px)
    "saturation": 1048575.0,  # ADU
    "dead_fraction": 0.0,
    "hot_fraction": 0.0,
    "marker_values": True,  # -1 on gaps, -2 on dead pixels (CBF)
    "dtype": "float32",  # or "int32" (CBF-like integer counts)
    "spot_mask_sigma": 1.5,
    "spot_mask_min_photons": 1.0,
    "spot_snr_min": 3.0,
}

#: Fields of the spot table (one row per predicted reflection on the detector).
SPOT_DTYPE = np.dtype(
    [
        ("fast", "f8"),  # centroid, pixels, corner convention
        ("slow", "f8"),
        ("h", "i4"),
        ("k", "i4"),
        ("l", "i4"),
        ("d", "f8"),  # Å
        ("photons", "f8"),  # expected recorded photons (after partiality, LP, shadow, gain map)
        ("intensity", "f8"),  # |F|² on the Wilson scale (before partiality and LP)
        ("partiality", "f8"),
        ("lp", "f8"),  # Lorentz x polarisation
        ("snr", "f8"),
        ("sigma_major", "f8"),  # profile σ along its long axis, pixels
        ("sigma_minor", "f8"),
        ("in_mask", "?"),  # qualified: contributes to spot_mask
    ]
)


@dataclass
class SimulatedStill:
    """A simulated still and its ground truth.

    Attributes
    ----------
    image : (n_slow, n_fast) float32 (or int32) ndarray
        Detector values (ADU; photons for gain 1); binary images are 0/1 float32.  With ``marker_values``,
        -1 on gap pixels and -2 on dead ones, as in CBF files.
    pixel_mask : (n_slow, n_fast) uint32 ndarray
        :mod:`napari_xrd.core.masks` bits (gaps, dead, hot).
    spot_mask : (n_slow, n_fast) bool ndarray
        Truth spot pixels (definition in the module docstring).
    spots : structured ndarray, dtype :data:`SPOT_DTYPE`
    geometry : DetectorGeometry
        Beam centre, tilt, distance and wavelength of the image.
    anomaly_labels : (7,) int8 ndarray
        In :data:`ANOMALY_CLASSES` order.
    params : dict
        Everything needed to regenerate the image with
        :func:`simulate_from_params` (crystal, detector, seed, all parameters
        and anomaly parameters, generator version).
    seed : int
    beamstop_mask : (n_slow, n_fast) bool ndarray
        Pixels in the beamstop's shadow (transmission below 0.5).
    artifact_mask : (n_slow, n_fast) bool ndarray
        Pixels changed by digital artifacts.
    """

    image: np.ndarray
    pixel_mask: np.ndarray
    spot_mask: np.ndarray
    spots: np.ndarray
    geometry: DetectorGeometry
    anomaly_labels: np.ndarray
    params: dict
    seed: int
    beamstop_mask: np.ndarray | None = None
    artifact_mask: np.ndarray | None = None
    background: np.ndarray | None = field(default=None, repr=False)

    @property
    def parameters(self) -> dict:
        """Alias of :attr:`params`."""
        return self.params

    @property
    def beam_center(self) -> tuple[float, float]:
        return self.geometry.beam_center

    @property
    def pitch(self) -> float:
        return self.geometry.pitch

    @property
    def yaw(self) -> float:
        return self.geometry.yaw

    @property
    def distance(self) -> float:
        return self.geometry.distance

    @property
    def wavelength(self) -> float:
        return self.geometry.wavelength

    @property
    def anomalies(self) -> list[str]:
        return [n for n, v in zip(ANOMALY_CLASSES, self.anomaly_labels) if v]

    def to_example(self, *, attrs: dict | None = None):
        """This image as a :class:`napari_xrd.core.dataset.Example`.

        Provenance holds the generator version, seed and all parameters;
        ``extra`` holds ``beamstop_mask`` and ``artifact_mask``.
        """
        from napari_xrd.core.dataset import Example

        return Example(
            image=self.image,
            pixel_mask=self.pixel_mask,
            spot_mask=self.spot_mask,
            spots=self.spots,
            geometry=self.geometry,
            anomaly_labels=self.anomaly_labels,
            provenance={"source": "simulated", "generator": GENERATOR_VERSION, "seed": int(self.seed),
                        "params": self.params},
            attrs=dict(attrs or {}),
            extra={
                name: getattr(self, name)
                for name in ("beamstop_mask", "artifact_mask")
                if getattr(self, name) is not None
            },
        )


def _normalise_anomalies(anomalies, rng, level) -> dict:
    if anomalies is None:
        return {}
    if isinstance(anomalies, str):
        anomalies = [a for a in anomalies.split(",") if a]
    if isinstance(anomalies, dict):
        out = {}
        for name, p in anomalies.items():
            label_vector([name])  # validates the name
            out[name] = dict(p) if p else _anom.draw_anomaly_params(name, rng, level=level)
        return out
    label_vector(list(anomalies))
    return {name: _anom.draw_anomaly_params(name, rng, level=level) for name in anomalies}


def _resolve_detector(detector):
    if detector is None or not isinstance(detector, str):
        return detector
    from napari_xrd.core.detectors import get_detector

    return get_detector(detector)


def simulate_still(
    geometry: DetectorGeometry,
    crystal: Crystal,
    *,
    seed: int = 0,
    detector=None,
    anomalies=None,
    keep_background: bool = False,
    **params,
) -> SimulatedStill:
    """Simulate one diffraction still with its ground truth.

    Parameters
    ----------
    geometry : DetectorGeometry
        Detector pose, beam centre, wavelength and image shape (full or binned).
    crystal : Crystal
        Cell, space group, orientation and intensity model.
    seed : int
        Seeds noise, bad pixels and anomaly parameter draws.
    detector : DetectorModel or str, optional
        Module layout for gaps and per-module gain (scaled to ``geometry.shape``).
    anomalies : sequence of str, comma-separated str, or dict name -> params
        Anomalies to inject (:data:`ANOMALY_CLASSES`); names without
        parameters get random ones.
    keep_background : bool
        Also return the noise-free expected background (photons) as
        ``result.background``.
    **params
        Any of :data:`DEFAULT_PARAMS`.

    Returns
    -------
    SimulatedStill
    """
    if not isinstance(geometry, DetectorGeometry):
        raise TypeError(f"geometry must be a DetectorGeometry, got {type(geometry).__name__}")
    if not isinstance(crystal, Crystal):
        raise TypeError(f"crystal must be a Crystal, got {type(crystal).__name__}")
    unknown = set(params) - set(DEFAULT_PARAMS)
    if unknown:
        raise ValueError(f"unknown simulation parameter(s) {sorted(unknown)}; known: {', '.join(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **params}
    if p["style"] not in ("realistic", "flat", "binary"):
        raise ValueError(f"style must be 'realistic', 'flat' or 'binary', got {p['style']!r}")
    if p["dtype"] not in ("float32", "int32"):
        raise ValueError(f"dtype must be 'float32' or 'int32', got {p['dtype']!r}")
    _check_params(p)
    det = _resolve_detector(detector)
    rng = np.random.default_rng(seed)
    shape = geometry.shape
    n_slow, n_fast = shape
    level = max(p["solvent_photons"] + p["flat_photons"] + 0.3 * p["air_photons"], 1.0)
    anom = _normalise_anomalies(anomalies, np.random.default_rng([int(seed), 1]), level)
    label_vector(list(anom))  # validates the names

    maps = _bg.pixel_maps(geometry, polarization_fraction=p["polarization_fraction"])
    strong = anom.get("strong_background")
    bg_factor = strong["factor"] if strong else 1.0
    signal_factor = strong["signal_factor"] if strong else 1.0

    # ---------------------------------------------------------------- spots
    d_min = max(float(p["d_min"]), 0.999 * geometry.d_range()[1])
    refl = predict_reflections(
        geometry,
        crystal.UB,
        d_min=d_min,
        mosaicity_deg=p["mosaicity_deg"],
        bandpass=p["bandpass"],
        domain_size=p["domain_size"],
        min_partiality=p["min_partiality"],
        oscillation_deg=p["oscillation_deg"],
        rotation_axis=p["rotation_axis"],
    )
    intensity = crystal.intensities(refl["hkl"])
    tt = refl["two_theta"]
    lp = _pol(refl["ray"], p["polarization_fraction"]) * refl["lorentz"]
    photons = p["intensity_scale"] * signal_factor * intensity * refl["partiality"] * lp
    sigma0 = max(
        math.sqrt((p["spot_sigma_mm"] / geometry.pixel_size) ** 2 + p["psf_px"] ** 2),
        p["min_sigma_px"],
    )
    cov = spot_covariance(
        geometry, tt, refl["azimuth"], mosaicity_deg=p["mosaicity_deg"], bandpass=p["bandpass"],
        divergence_deg=p["divergence_deg"], sigma0_px=sigma0,
    )
    keep = photons > 1e-3
    refl = {k: v[keep] for k, v in refl.items()}
    intensity, lp, photons, cov = intensity[keep], lp[keep], photons[keep], cov[keep]
    s_idx, f_idx, w = render_spots(shape, refl["fast"], refl["slow"], cov)

    # ------------------------------------------------------------ background
    if p["style"] == "realistic":
        lam = geometry.wavelength

        def base(s):
            tt = 2.0 * np.arcsin(np.clip(s * lam / 2.0, 0.0, 1.0))
            return (
                _bg.air_scatter(tt, photons=p["air_photons"], decay_deg=p["air_decay_deg"])
                + _bg.solvent_scatter(s, photons=p["solvent_photons"], falloff_d=p["solvent_falloff_d"])
                + p["flat_photons"]
            )

        back = maps.radial(base)
    else:
        back = np.full(shape, np.float32(p["flat_photons"] if p["style"] == "flat" else 0.0), dtype=np.float32)
    if p["style"] == "realistic":
        back *= maps["polarization"] * maps["solid_angle"]
    pixel_rad = geometry.pixel_size / geometry.distance
    # an injected ring, arc or cloud is labelled only if it shows on this detector: at least
    # 0.1 % of the pixels (50 at least) gain more than twice the background's photon noise
    visible = {name: p["style"] != "binary" for name in anom}
    noise_floor = np.sqrt(back + np.float32(1.0)) * np.float32(2.0) if anom else None
    min_pixels = max(50, int(1e-3 * back.size))
    for name in ("background_ring", "ice_ring", "loop_scattering", "diffuse_scattering"):
        if name not in anom:
            continue
        term = _anom.scattering_terms(name, anom[name], maps, pixel_rad=pixel_rad)
        term *= maps["polarization"] * maps["solid_angle"]
        if name == "diffuse_scattering":
            dp = anom[name]
            hs_idx, hf_idx, hw = render_spots(shape, refl["fast"], refl["slow"], cov * dp["halo_scale"] ** 2)
            halo = np.bincount(hf_idx, hw * photons[hs_idx] * dp["halo_fraction"], minlength=back.size)
            term += halo.reshape(shape).astype(np.float32)
        visible[name] = visible[name] and int(np.count_nonzero(term > noise_floor)) >= min_pixels
        back += term
    if bg_factor != 1.0:
        back *= np.float32(bg_factor)
    labels = label_vector([name for name in anom if visible[name]])

    # -------------------------------------------------------------- response
    if p["beamstop"] and p["style"] != "binary":
        bc = geometry.beam_center
        off = p["beamstop_offset_px"]
        shadow = _bg.beamstop_transmission(
            shape, (bc[0] + off[0], bc[1] + off[1]), radius_px=p["beamstop_radius_mm"] / geometry.pixel_size,
            arm_angle_deg=p["beamstop_arm_angle_deg"], arm_width_px=p["beamstop_arm_width_mm"] / geometry.pixel_size,
            transmission=p["beamstop_transmission"],
        )
    else:
        shadow = np.ones(shape, dtype=np.float32)
    response = shadow
    module_gains = None
    if "non_uniform_detector" in anom:
        gmap, module_gains = _anom.gain_map(anom["non_uniform_detector"], shape, det)
        response = response * gmap
    pixel_mask = det.gap_mask(shape) if det is not None else np.zeros(shape, dtype=np.uint32)
    pixel_mask |= _bg.bad_pixels(shape, rng, dead_fraction=p["dead_fraction"], hot_fraction=p["hot_fraction"])
    gap = (pixel_mask & GAP) != 0
    if gap.any():
        response = np.where(gap, np.float32(0), response)

    flat_resp = response.ravel()
    at_center = _pixel_lookup(flat_resp, refl["fast"], refl["slow"], shape)
    rec_photons = photons * at_center
    spot_img = np.bincount(f_idx, w * photons[s_idx], minlength=back.size).astype(np.float32).reshape(shape)
    expected_back = back * response
    expected = spot_img * response + expected_back

    # ---------------------------------------------------------------- truth
    rn_photons = p["read_noise"] / p["gain"] if p["gain"] > 0 else 0.0
    # a CCD's point spread lowers the per-pixel noise by sqrt(sum of squared PSF weights)
    psf_noise = 1.0 / math.sqrt(1.0 + 4.0 * math.pi * p["ccd_psf_px"] ** 2) if p["ccd_psf_px"] > 0 else 1.0
    det_cov = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    n_eff = 4.0 * np.pi * np.sqrt(det_cov)
    b_center = _pixel_lookup(expected_back.ravel(), refl["fast"], refl["slow"], shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.nan_to_num(rec_photons / np.sqrt(rec_photons + n_eff * (b_center + rn_photons**2)))
    bad_center = _pixel_lookup(((pixel_mask & (GAP | DEAD)) != 0).ravel().astype(np.float32),
                               refl["fast"], refl["slow"], shape) > 0
    shadowed = _pixel_lookup(shadow.ravel(), refl["fast"], refl["slow"], shape) < 0.5
    on_image = (refl["fast"] >= 0) & (refl["fast"] < n_fast) & (refl["slow"] >= 0) & (refl["slow"] < n_slow)
    qualified = (snr >= p["spot_snr_min"]) & ~bad_center & ~shadowed & on_image
    # spot mask, evaluated only on stamp pixels of qualified spots
    sel = qualified[s_idx]
    u, inv = np.unique(f_idx[sel], return_inverse=True)
    q_sig = np.bincount(inv, (w * photons[s_idx])[sel], minlength=len(u)) * flat_resp[u]
    noise_sigma = np.sqrt(expected_back.ravel()[u] * psf_noise**2 + rn_photons**2)
    ok = q_sig >= np.maximum(p["spot_mask_sigma"] * noise_sigma, p["spot_mask_min_photons"])
    # and every qualified spot's own core (its pixels at half its peak or more): a weak
    # spot spread over many pixels (a streak) has no pixel above the noise rule, yet it
    # is a spot by its SNR and must not be taught as background
    own = w * photons[s_idx] * flat_resp[f_idx]
    peak = np.zeros(len(photons))
    np.maximum.at(peak, s_idx[sel], own[sel])
    core = sel & (own >= 0.5 * peak[s_idx]) & (own >= p["spot_mask_min_photons"])
    ok |= np.isin(u, f_idx[core])
    ok &= (pixel_mask.ravel()[u] & (GAP | DEAD)) == 0
    ok &= shadow.ravel()[u] >= 0.5
    spot_mask = np.zeros(shape, dtype=bool)
    spot_mask.ravel()[u[ok]] = True

    # -------------------------------------------------------------- read-out
    artifact_mask = np.zeros(shape, dtype=bool)
    if p["style"] == "binary":
        image = spot_mask.astype(np.float32)
    else:
        if p["noise"]:
            image = _bg.read_out(expected, rng, gain=p["gain"], read_noise=p["read_noise"], offset=p["offset"],
                                 saturation=p["saturation"], psf_px=p["ccd_psf_px"])
        else:
            image = (expected * np.float32(p["gain"]) + np.float32(p["offset"])).astype(np.float32)
            np.minimum(image, np.float32(p["saturation"]), out=image)
        hot = (pixel_mask & HOT) != 0
        if hot.any():
            image[hot] = np.float32(p["saturation"]) * rng.uniform(0.2, 1.0, int(hot.sum())).astype(np.float32)
        if "artifact" in anom:
            artifact_mask = _anom.apply_artifacts(
                image, anom["artifact"], detector=det, saturation=p["saturation"],
                background=float(np.median(expected_back)) * p["gain"] + p["offset"],
            )
        dead = (pixel_mask & DEAD) != 0
        image[dead] = 0
        image[gap] = 0
    if p["marker_values"]:
        _bg.apply_markers(image, pixel_mask)
    if p["dtype"] == "int32" and p["style"] != "binary":
        image = np.rint(image).astype(np.int32)

    spots = np.zeros(len(photons), dtype=SPOT_DTYPE)
    spots["fast"], spots["slow"] = refl["fast"], refl["slow"]
    spots["h"], spots["k"], spots["l"] = refl["hkl"].T
    spots["d"] = refl["d"]
    spots["photons"] = rec_photons
    spots["intensity"] = intensity
    spots["partiality"] = refl["partiality"]
    spots["lp"] = lp
    spots["snr"] = snr
    ev = np.linalg.eigvalsh(cov)
    spots["sigma_major"], spots["sigma_minor"] = np.sqrt(ev[:, 1]), np.sqrt(ev[:, 0])
    spots["in_mask"] = qualified

    record = {
        "generator": GENERATOR_VERSION,
        "seed": int(seed),
        "geometry": geometry.to_dict(),
        "detector": None if det is None else det.name,
        "crystal": crystal.to_dict(),
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
        "anomalies": anom,
        "anomaly_visible": visible,
        "d_min_used": d_min,
    }
    if module_gains is not None:
        record["module_gains"] = module_gains
    return SimulatedStill(
        image=image,
        pixel_mask=pixel_mask,
        spot_mask=spot_mask,
        spots=spots,
        geometry=geometry,
        anomaly_labels=labels,
        params=record,
        seed=int(seed),
        beamstop_mask=shadow < 0.5,
        artifact_mask=artifact_mask,
        background=expected_back if keep_background else None,
    )


_POSITIVE = ("d_min", "gain", "min_sigma_px", "air_decay_deg", "solvent_falloff_d", "spot_mask_min_photons")
_NON_NEGATIVE = (
    "mosaicity_deg", "bandpass", "divergence_deg", "spot_sigma_mm", "psf_px", "intensity_scale", "air_photons",
    "solvent_photons", "flat_photons", "beamstop_radius_mm", "beamstop_arm_width_mm", "read_noise", "ccd_psf_px",
    "dead_fraction", "hot_fraction", "spot_mask_sigma", "spot_snr_min", "oscillation_deg",
)


def _check_params(p: dict) -> None:
    for name in _POSITIVE + _NON_NEGATIVE:
        v = p[name]
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (v == 0 and name in _POSITIVE):
            kind = "positive" if name in _POSITIVE else "non-negative"
            raise ValueError(f"simulation parameter {name} must be a {kind} finite number, got {v!r}")
    if not 0 < p["min_partiality"] < 1:
        raise ValueError(f"min_partiality must be in (0, 1), got {p['min_partiality']!r}")
    if not 0 <= p["beamstop_transmission"] <= 1 or not 0 <= p["polarization_fraction"] <= 1:
        raise ValueError("beamstop_transmission and polarization_fraction must be in [0, 1]")
    if p["dead_fraction"] > 1 or p["hot_fraction"] > 1:
        raise ValueError("dead_fraction and hot_fraction must be at most 1")


def _pol(ray, fraction):
    return fraction * (1.0 - ray[:, 0] ** 2) + (1.0 - fraction) * (1.0 - ray[:, 1] ** 2)


def _pixel_lookup(flat_values, fast, slow, shape):
    n_slow, n_fast = shape
    ix = np.clip(np.floor(fast).astype(np.int64), 0, n_fast - 1)
    iy = np.clip(np.floor(slow).astype(np.int64), 0, n_slow - 1)
    return flat_values[iy * n_fast + ix]


def simulate_from_params(record: dict, *, keep_background: bool = False) -> SimulatedStill:
    """Regenerate an image from ``SimulatedStill.params`` (bit-identical).

    ``keep_background`` also returns the noise-free expected background (see
    :func:`simulate_still`).
    """
    c = record["crystal"]
    crystal = Crystal(
        tuple(c["cell"]), c["space_group"], np.array(c["orientation"]), wilson_b=c["wilson_b"],
        structure_seed=c["structure_seed"], name=c.get("name", ""),
    )
    params = dict(record["params"])
    params["beamstop_offset_px"] = tuple(params["beamstop_offset_px"])
    params["rotation_axis"] = tuple(params.get("rotation_axis", DEFAULT_PARAMS["rotation_axis"]))
    return simulate_still(
        DetectorGeometry.from_dict(record["geometry"]), crystal, seed=record["seed"],
        detector=record.get("detector"), anomalies=record.get("anomalies") or None,
        keep_background=keep_background, **params,
    )


