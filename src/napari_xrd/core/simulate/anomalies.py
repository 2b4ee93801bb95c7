"""The seven anomaly classes of RefleX (Czyzewski et al. 2021), each injectable and labelled.

:data:`ANOMALY_CLASSES` fixes the order of the label vector everywhere in
napari-xrd.  Each class has a parameter draw (:func:`draw_anomaly_params`,
amplitudes scaled to the image's own background so that an injected anomaly
is always visible) and an effect:

=====================  =====================================================
class                  what is injected
=====================  =====================================================
background_ring        a distinct water/solvent ring (d 3.0-3.9 Å)
diffuse_scattering     halos around Bragg spots and anisotropic diffuse clouds
ice_ring               hexagonal-ice powder rings, sharp or spotty (texture)
loop_scattering        arcs at d 4-6 Å and a streak through the beam
non_uniform_detector   per-module (or per-tile) gain differences
strong_background      background raised and crystal signal lowered (low SNR)
artifact               stripes, a dead module, hot clusters, CCD blooming
=====================  =====================================================

The label of an image is 1 for every class whose effect was injected and
shows: a ring, arc or cloud must raise at least 0.1 % of the pixels (50 at
least) by more than twice the background's photon noise (an ice ring beyond
the detector edge is not labelled), and nothing shows on a binary image.
"""

from __future__ import annotations

import math

import numpy as np

from napari_xrd.core.simulate.background import module_labels, ring_profile

__all__ = [
    "ANOMALY_CLASSES",
    "ICE_RINGS",
    "label_vector",
    "draw_anomaly_params",
    "scattering_terms",
    "gain_map",
    "apply_artifacts",
]

ANOMALY_CLASSES = (
    "background_ring",
    "diffuse_scattering",
    "ice_ring",
    "loop_scattering",
    "non_uniform_detector",
    "strong_background",
    "artifact",
)

# hexagonal ice (Ih) powder lines: d-spacing (Å), approximate relative intensity
ICE_RINGS = np.array(
    [
        (3.895, 100.0),
        (3.669, 60.0),
        (3.441, 70.0),
        (2.671, 25.0),
        (2.249, 40.0),
        (2.071, 30.0),
        (1.948, 6.0),
        (1.917, 20.0),
        (1.883, 14.0),
        (1.835, 5.0),
        (1.720, 6.0),
    ]
)


def label_vector(anomalies) -> np.ndarray:
    """int8 vector in :data:`ANOMALY_CLASSES` order, 1 where a class is in ``anomalies``."""
    unknown = set(anomalies) - set(ANOMALY_CLASSES)
    if unknown:
        raise ValueError(f"unknown anomaly class(es) {sorted(unknown)}; known: {', '.join(ANOMALY_CLASSES)}")
    return np.array([1 if name in anomalies else 0 for name in ANOMALY_CLASSES], dtype=np.int8)


def draw_anomaly_params(name: str, rng: np.random.Generator, *, level: float = 10.0) -> dict:
    """Random parameters for one anomaly class.

    Parameters
    ----------
    name : str
        One of :data:`ANOMALY_CLASSES`.
    rng : numpy Generator
    level : float
        The image's typical background (photons per pixel); amplitudes are
        drawn relative to it so the anomaly stands out of the noise.

    Returns
    -------
    params : dict (JSON-friendly)
    """
    level = max(float(level), 1.0)
    seed = int(rng.integers(0, 2**31))
    if name == "background_ring":
        return {
            "photons": level * float(rng.uniform(0.6, 3.0)),
            "d": float(rng.uniform(3.0, 3.9)),
            "sigma_s": float(rng.uniform(0.02, 0.045)),
        }
    if name == "diffuse_scattering":
        return {
            "halo_fraction": float(rng.uniform(0.3, 1.2)),
            "halo_scale": float(rng.uniform(3.0, 8.0)),
            "cloud_photons": level * float(rng.uniform(0.3, 1.0)),
            "band_s": float(rng.uniform(0.15, 0.35)),
            "band_width_s": float(rng.uniform(0.04, 0.09)),
            "seed": seed,
        }
    if name == "ice_ring":
        spotty = bool(rng.random() < 0.5)
        return {
            "photons": level * float(rng.uniform(1.0, 8.0)) * (3.0 if spotty else 1.0),
            "sigma_s": float(rng.uniform(0.0012, 0.004)),
            "spotty": spotty,
            "n_grains": int(rng.integers(40, 400)),
            "seed": seed,
        }
    if name == "loop_scattering":
        return {
            "photons": level * float(rng.uniform(0.8, 3.0)),
            "d": float(rng.uniform(4.0, 6.0)),
            "sigma_s": float(rng.uniform(0.01, 0.03)),
            "arc_center_deg": float(rng.uniform(-180, 180)),
            "arc_concentration": float(rng.uniform(0.5, 6.0)),
            "streak_photons": level * float(rng.uniform(1.0, 5.0)),
            "streak_angle_deg": float(rng.uniform(-90, 90)),
            "streak_width_deg": float(rng.uniform(0.1, 0.5)),
        }
    if name == "non_uniform_detector":
        return {"gain_sigma": float(rng.uniform(0.12, 0.35)), "seed": seed}
    if name == "strong_background":
        return {"factor": float(rng.uniform(5.0, 30.0)), "signal_factor": float(rng.uniform(0.15, 0.6))}
    if name == "artifact":
        kinds = ["stripes", "dead_module", "hot_cluster", "bloom"]
        chosen = [k for k in kinds if rng.random() < 0.5] or [str(rng.choice(kinds))]
        return {"kinds": chosen, "seed": seed}
    raise ValueError(f"unknown anomaly class {name!r}; known: {', '.join(ANOMALY_CLASSES)}")


def _grain_texture(rng: np.random.Generator, n_grains: int, width_rad: float, n_bins: int = 4096) -> np.ndarray:
    """Azimuthal texture of a spotty powder ring: random crystallites, mean 1."""
    tex = np.zeros(n_bins)
    centers = rng.uniform(-np.pi, np.pi, n_grains)
    amp = rng.exponential(1.0, n_grains)
    step = 2 * np.pi / n_bins
    half = max(int(4 * width_rad / step), 1)
    i0 = ((centers + np.pi) / step).astype(np.int64)
    offs = np.arange(-half, half + 1)
    idx = (i0[:, None] + offs[None, :]) % n_bins
    dphi = (i0[:, None] + offs[None, :]) * step - np.pi - centers[:, None]
    tex += np.bincount(idx.ravel(), (amp[:, None] * np.exp(-0.5 * (dphi / width_rad) ** 2)).ravel(), minlength=n_bins)
    tex += 0.05 * tex.mean()
    return (tex / tex.mean()).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], n_terms: int = 3, knots: int = 6) -> np.ndarray:
    """A smooth, positive random field with mean about 1: a sum of separable products of random 1-D curves."""
    n_slow, n_fast = shape
    out = np.zeros(shape, dtype=np.float32)
    for _ in range(n_terms):
        ys = np.interp(np.linspace(0, knots - 1, n_slow), np.arange(knots), rng.gamma(2.0, 0.5, knots))
        xs = np.interp(np.linspace(0, knots - 1, n_fast), np.arange(knots), rng.gamma(2.0, 0.5, knots))
        out += ys.astype(np.float32)[:, None] * xs.astype(np.float32)[None, :]
    return out / np.float32(n_terms)


def scattering_terms(name: str, params: dict, maps, *, pixel_rad: float) -> np.ndarray | None:
    """Additive expected photons per pixel of a ring/arc/cloud anomaly, or None.

    ``maps`` is a :class:`~napari_xrd.core.simulate.background.PixelMaps`;
    ``pixel_rad`` is the angular size of a pixel (sets the grain size of
    spotty ice).  Results are before the solid-angle/polarisation factors.
    """
    if name == "background_ring":
        return maps.radial(lambda s: params["photons"] * ring_profile(s, params["d"], params["sigma_s"]))
    if name == "ice_ring":
        return _ice_rings(params, maps, pixel_rad)
    if name == "loop_scattering":
        radial = maps.radial(lambda s: params["photons"] * ring_profile(s, params["d"], params["sigma_s"]))
        phi = np.linspace(-np.pi, np.pi, 4096, endpoint=False)
        arc = np.exp(params["arc_concentration"] * (np.cos(phi - math.radians(params["arc_center_deg"])) - 1))
        out = radial * maps.azimuthal(arc.astype(np.float32))
        az, tt = maps.azimuth, maps.two_theta
        a = np.float32(math.radians(params["streak_angle_deg"]))
        w = np.float32(math.radians(params["streak_width_deg"]))
        sin_off = np.abs(np.sin(az - a))
        near = tt * sin_off < 5 * w
        perp = tt[near] * sin_off[near]
        out[near] += np.float32(params["streak_photons"]) * np.exp(-0.5 * (perp / w) ** 2) * np.exp(
            -tt[near] / np.float32(0.15)
        )
        return out
    if name == "diffuse_scattering":
        # anisotropic clouds: a radial band, low azimuthal harmonics (butterfly-like lobes), smooth texture
        rng = np.random.default_rng(params["seed"])
        field = _smooth_field(rng, maps.shape, knots=10)
        s_c, s_w = params.get("band_s", 0.28), params.get("band_width_s", 0.08)
        band = maps.radial(lambda s: params["cloud_photons"] * np.exp(-0.5 * ((s - s_c) / s_w) ** 2))
        phi = np.linspace(-np.pi, np.pi, 1024, endpoint=False)
        lobes = 1.0 + sum(rng.uniform(0.2, 0.6) * np.cos(m * phi + rng.uniform(0, 2 * np.pi)) for m in (1, 2, 3))
        lobes = np.clip(lobes, 0.0, None) / max(float(np.mean(np.clip(lobes, 0.0, None))), 1e-6)
        return field * band * maps.azimuthal(lobes.astype(np.float32))
    return None


def _ice_rings(params: dict, maps, pixel_rad: float) -> np.ndarray:
    d, rel = ICE_RINGS[:, 0], ICE_RINGS[:, 1] / 100.0
    sig = params["sigma_s"]
    if not params["spotty"]:
        return maps.radial(lambda s: sum(params["photons"] * r * ring_profile(s, dk, sig) for dk, r in zip(d, rel)))
    # spotty: each pixel belongs to its nearest ring, whose crystallites texture it along the azimuth
    rng = np.random.default_rng(params["seed"])
    textures = np.stack(
        [
            _grain_texture(rng, params["n_grains"], 1.5 * pixel_rad / max(math.sin(2 * math.asin(min(1.0, 0.5 / dk))), 1e-3))
            for dk in d
        ]
    )
    nearest = maps.ring_index(1.0 / d)

    def own_ring(s):
        k = np.argmin(np.abs(s[:, None] - (1.0 / d)[None, :]), axis=1)
        return params["photons"] * rel[k] * ring_profile(s, d[k], sig)

    return maps.radial(own_ring) * _texture_lookup(maps, textures, nearest)


def _texture_lookup(maps, textures: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    n = textures.shape[1]
    az_idx = maps.azimuth_index(n)
    return textures[nearest, az_idx]


def gain_map(params: dict, shape: tuple[int, int], detector=None) -> tuple[np.ndarray, list]:
    """Per-module gain (mean 1) of a non-uniform detector.

    Returns
    -------
    gain : (n_slow, n_fast) float32 ndarray
    module_gains : list of float
    """
    rng = np.random.default_rng(params["seed"])
    grid = (2, 2) if detector is None or detector.n_modules == (1, 1) else None
    labels = module_labels(shape, None if grid else detector, grid=grid or (2, 2))
    n = int(labels.max()) + 1
    gains = np.clip(1.0 + params["gain_sigma"] * rng.standard_normal(n), 0.3, 2.0)
    # make sure the response is visibly non-uniform
    if n > 1 and np.ptp(gains) < 2 * params["gain_sigma"]:
        gains[int(np.argmin(gains))] -= params["gain_sigma"]
    return gains.astype(np.float32)[labels], [float(g) for g in gains]


def apply_artifacts(
    image: np.ndarray, params: dict, *, detector=None, saturation: float = 1e6, background: float = 10.0
) -> np.ndarray:
    """Digital artifacts on read-out values (in place); returns a bool map of the affected pixels."""
    rng = np.random.default_rng(params["seed"])
    n_slow, n_fast = image.shape
    hit = np.zeros(image.shape, dtype=bool)
    level = max(float(background), 1.0)
    for kind in params["kinds"]:
        if kind == "stripes":
            for _ in range(int(rng.integers(1, 5))):
                width = int(rng.integers(1, max(2, n_fast // 100) + 1))
                sign = rng.choice([-1.0, 1.0])
                value = np.float32(sign * level * rng.uniform(2.0, 10.0))
                if rng.random() < 0.5:
                    i = int(rng.integers(0, n_slow - width))
                    image[i : i + width] = np.maximum(image[i : i + width] + value, 0)
                    hit[i : i + width] = True
                else:
                    j = int(rng.integers(0, n_fast - width))
                    image[:, j : j + width] = np.maximum(image[:, j : j + width] + value, 0)
                    hit[:, j : j + width] = True
        elif kind == "dead_module":
            grid = (2, 2) if detector is None or detector.n_modules == (1, 1) else None
            labels = module_labels(image.shape, None if grid else detector, grid=grid or (2, 2))
            m = int(rng.integers(0, int(labels.max()) + 1))
            sel = labels == m
            image[sel] = 0
            hit |= sel
        elif kind == "hot_cluster":
            for _ in range(int(rng.integers(1, 6))):
                r = int(rng.integers(1, max(2, n_fast // 150) + 1))
                cy, cx = int(rng.integers(r, n_slow - r)), int(rng.integers(r, n_fast - r))
                image[cy - r : cy + r + 1, cx - r : cx + r + 1] = np.float32(saturation)
                hit[cy - r : cy + r + 1, cx - r : cx + r + 1] = True
        elif kind == "bloom":
            for _ in range(int(rng.integers(1, 4))):
                length = int(rng.integers(n_slow // 20, n_slow // 4 + 2))
                cy, cx = int(rng.integers(0, n_slow - length)), int(rng.integers(0, n_fast))
                image[cy : cy + length, cx] = np.float32(saturation)
                hit[cy : cy + length, cx] = True
        else:
            raise ValueError(f"unknown artifact kind {kind!r}")
    return hit
