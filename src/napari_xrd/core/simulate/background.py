"""Background scattering and detector read-out for simulated stills.

All scattering terms are expected photons per pixel computed from per-pixel
maps of :class:`~napari_xrd.core.geometry.DetectorGeometry` (2θ, azimuth,
solid angle, polarisation), so rings stay on their d-spacing on a tilted
detector and fall off with the pixel's solid angle.  Profiles are written in
``s = 1/d = 2 sinθ / λ`` (Å⁻¹, no 2π).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.masks import DEAD, GAP, HOT

__all__ = [
    "PixelMaps",
    "pixel_maps",
    "ring_profile",
    "air_scatter",
    "solvent_scatter",
    "beamstop_transmission",
    "module_labels",
    "read_out",
    "bad_pixels",
]


class PixelMaps:
    """Per-pixel maps of one geometry, computed on first use (float32).

    The detector is flat, so lab coordinates are affine in the pixel indices:
    the three lab points that :meth:`DetectorGeometry.lab_coordinates` gives
    for the first pixel and its two neighbours fix them exactly.

    Attributes
    ----------
    two_theta, azimuth : (n_slow, n_fast) float32 ndarray
        Radians.
    s : (n_slow, n_fast) float32 ndarray
        ``1/d`` in Å⁻¹.
    solid_angle : (n_slow, n_fast) float32 ndarray
        Relative to normal incidence.
    polarization : (n_slow, n_fast) float32 ndarray
        See :func:`~napari_xrd.core.simulate.still.polarization_factor`.
    """

    def __init__(self, geometry: DetectorGeometry, *, polarization_fraction: float = 0.99):
        self.geometry = geometry
        self.polarization_fraction = float(polarization_fraction)
        n_slow, n_fast = geometry.shape
        p = geometry.lab_coordinates(np.array([0.5, 1.5, 0.5]), np.array([0.5, 0.5, 1.5]))
        df, ds = p[1] - p[0], p[2] - p[0]
        j = np.arange(n_fast, dtype=np.float64)[None, :]
        i = np.arange(n_slow, dtype=np.float64)[:, None]
        self._xyz = [(p[0, c] + df[c] * j).astype(np.float32) + (ds[c] * i).astype(np.float32) for c in range(3)]
        x, y, z = self._xyz
        self._rho2 = x * x + y * y
        self._dist2 = self._rho2 + z * z

    @functools.cached_property
    def two_theta(self) -> np.ndarray:
        return np.arctan2(np.sqrt(self._rho2), self._xyz[2])

    @functools.cached_property
    def azimuth(self) -> np.ndarray:
        return np.arctan2(self._xyz[1], self._xyz[0])

    @functools.cached_property
    def s(self) -> np.ndarray:
        return np.sin(self.two_theta * np.float32(0.5)) * np.float32(2.0 / self.geometry.wavelength)

    @functools.cached_property
    def solid_angle(self) -> np.ndarray:
        dp = np.float32(self.geometry.perpendicular_distance)
        r = dp / np.sqrt(self._dist2)
        return r * r * r

    @functools.cached_property
    def polarization(self) -> np.ndarray:
        x, y, _ = self._xyz
        f = np.float32(self.polarization_fraction)
        return 1.0 - (f * x * x + (1 - f) * y * y) / self._dist2

    def __getitem__(self, key: str) -> np.ndarray:
        return getattr(self, key)

    # ------------------------------------------------------ 1-D lookups
    _N_TABLE = 1 << 15

    @functools.cached_property
    def _s_table(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.s
        lo, hi = float(s.min()), float(s.max())
        grid = np.linspace(lo, hi, self._N_TABLE)
        idx = ((s - np.float32(lo)) * np.float32((self._N_TABLE - 1) / max(hi - lo, 1e-12)) + np.float32(0.5))
        return grid, idx.astype(np.int32)

    @functools.cached_property
    def _az_index(self) -> np.ndarray:
        n = self._N_TABLE
        return (((self.azimuth + np.float32(np.pi)) * np.float32(n / (2 * np.pi))).astype(np.int32)) % n

    def radial(self, fn) -> np.ndarray:
        """``fn(s)`` at every pixel, evaluated on a fine 1-D grid of ``s`` and looked up (fast).

        The grid has 32768 points over the image's ``s`` range (steps of
        about 2e-5 Å⁻¹ for a typical detector), far finer than any ring.
        """
        grid, idx = self._s_table
        return np.asarray(fn(grid), dtype=np.float32)[idx]

    def ring_index(self, centers_s: np.ndarray) -> np.ndarray:
        """Index of the nearest of ``centers_s`` (sorted or not) for every pixel."""
        grid, idx = self._s_table
        c = np.asarray(centers_s, dtype=float)
        nearest = np.argmin(np.abs(grid[:, None] - c[None, :]), axis=1).astype(np.int16)
        return nearest[idx]

    def azimuth_index(self, n: int) -> np.ndarray:
        """Bin index (0 ... n-1) of every pixel's azimuth in ``n`` equal bins over ``[-π, π)``."""
        return ((self._az_index.astype(np.int64) * n) // self._N_TABLE).astype(np.int32)

    def azimuthal(self, table: np.ndarray) -> np.ndarray:
        """A 1-D table sampled uniformly in azimuth over ``[-π, π)``, looked up at every pixel."""
        table = np.asarray(table)
        return table[self.azimuth_index(len(table))]

    @property
    def shape(self) -> tuple[int, int]:
        return self.geometry.shape


def pixel_maps(geometry: DetectorGeometry, *, polarization_fraction: float = 0.99) -> PixelMaps:
    """Lazily computed per-pixel maps (``two_theta``, ``azimuth``, ``s``, ``solid_angle``, ``polarization``)."""
    return PixelMaps(geometry, polarization_fraction=polarization_fraction)


def ring_profile(s: np.ndarray, d_spacing: float, sigma_s: float) -> np.ndarray:
    """Gaussian ring in ``s`` centred on ``1/d_spacing`` with width ``sigma_s`` (Å⁻¹), peak 1."""
    return np.exp(-0.5 * ((s - np.float32(1.0 / d_spacing)) / np.float32(sigma_s)) ** 2)


def air_scatter(two_theta: np.ndarray, *, photons: float, decay_deg: float) -> np.ndarray:
    """Air scatter along the beam path: ``photons · exp(-2θ / decay)``, strongest near the beam."""
    return np.float32(photons) * np.exp(-two_theta * np.float32(1.0 / math.radians(decay_deg)))


def solvent_scatter(s: np.ndarray, *, photons: float, falloff_d: float = 2.7) -> np.ndarray:
    """Diffuse scatter of disordered solvent, the crystal's disorder and Compton scattering.

    A plateau of ``photons`` per pixel at low angle that halves at
    ``d = falloff_d`` (Å) and keeps falling, ``photons / (1 + (s d_f)⁴)``: the
    shape of the measured background of a protein crystal on either side of
    its water ring.
    """
    x = (s * np.float32(falloff_d)) ** 2
    return np.float32(photons) / (1.0 + x * x)


def beamstop_transmission(
    shape: tuple[int, int],
    center: tuple[float, float],
    *,
    radius_px: float,
    arm_angle_deg: float,
    arm_width_px: float,
    transmission: float = 0.01,
    edge_px: float = 1.5,
) -> np.ndarray:
    """Shadow of a round beamstop and its holder arm.

    Parameters
    ----------
    shape : (n_slow, n_fast)
    center : (fast, slow)
        Beamstop centre, pixels, corner convention (near the beam centre).
    radius_px : float
        Disc radius.
    arm_angle_deg : float
        Direction of the arm from the disc to the image edge, ``atan2(slow,
        fast)`` in degrees.
    arm_width_px : float
    transmission : float
        Fraction of photons passing the beamstop.
    edge_px : float
        Width of the soft penumbra.

    Returns
    -------
    transmission : (n_slow, n_fast) float32 ndarray
        1 in the open, ``transmission`` in the full shadow.
    """
    n_slow, n_fast = shape
    x = (np.arange(n_fast, dtype=np.float32) + 0.5 - np.float32(center[0]))[None, :]
    y = (np.arange(n_slow, dtype=np.float32) + 0.5 - np.float32(center[1]))[:, None]
    dist_disc = np.sqrt(x * x + y * y) - np.float32(radius_px)
    a = math.radians(arm_angle_deg)
    along = x * np.float32(math.cos(a)) + y * np.float32(math.sin(a))
    across = np.abs(-x * np.float32(math.sin(a)) + y * np.float32(math.cos(a))) - np.float32(arm_width_px / 2)
    dist_arm = np.where(along > 0, across, np.float32(1e9))
    inside = np.clip(0.5 - np.minimum(dist_disc, dist_arm) / np.float32(edge_px), 0.0, 1.0)
    return (1.0 - inside * np.float32(1.0 - transmission)).astype(np.float32)


def module_labels(shape: tuple[int, int], detector=None, *, grid: tuple[int, int] = (2, 2)) -> np.ndarray:
    """Index of the detector module (readout unit) each pixel belongs to.

    Uses the module layout of ``detector`` (a
    :class:`~napari_xrd.core.detectors.DetectorModel`, scaled to ``shape``);
    without one, an even ``grid`` of (fast, slow) tiles.

    Returns
    -------
    labels : (n_slow, n_fast) int32 ndarray
    """
    n_slow, n_fast = shape
    if detector is not None:
        nf, ns = detector.n_modules
        pitch_f = (detector.module_fast + detector.gap_fast) * n_fast / detector.n_fast
        pitch_s = (detector.module_slow + detector.gap_slow) * n_slow / detector.n_slow
    else:
        nf, ns = grid
        pitch_f, pitch_s = n_fast / nf, n_slow / ns
    col = np.minimum((np.arange(n_fast) / pitch_f).astype(np.int32), nf - 1)
    row = np.minimum((np.arange(n_slow) / pitch_s).astype(np.int32), ns - 1)
    return (row[:, None] * nf + col[None, :]).astype(np.int32)


def bad_pixels(
    shape: tuple[int, int], rng: np.random.Generator, *, dead_fraction: float, hot_fraction: float
) -> np.ndarray:
    """Random dead and hot pixels as a pixel mask (``DEAD`` and ``HOT`` bits)."""
    n = shape[0] * shape[1]
    mask = np.zeros(n, dtype=np.uint32)
    n_dead = rng.binomial(n, min(dead_fraction, 1.0)) if dead_fraction > 0 else 0
    n_hot = rng.binomial(n, min(hot_fraction, 1.0)) if hot_fraction > 0 else 0
    if n_dead:
        mask[rng.integers(0, n, n_dead)] |= DEAD
    if n_hot:
        mask[rng.integers(0, n, n_hot)] |= HOT
    return mask.reshape(shape)


_NORMAL_ABOVE = 25.0


def read_out(
    expected: np.ndarray,
    rng: np.random.Generator,
    *,
    gain: float = 1.0,
    read_noise: float = 0.0,
    offset: float = 0.0,
    saturation: float | None = None,
    psf_px: float = 0.0,
) -> np.ndarray:
    """Detector values from expected photons: Poisson counting, gain, offset, read noise, saturation.

    Parameters
    ----------
    expected : (n_slow, n_fast) ndarray
        Expected photons per pixel (after every multiplicative response).
        Counts are Poisson; above 25 expected photons the normal
        approximation with the same mean and variance is used (faster).
    gain : float
        Detector units (ADU) per photon.
    read_noise : float
        Gaussian read noise in ADU (0 for photon-counting detectors).
    offset : float
        Constant pedestal in ADU (CCDs).
    saturation : float, optional
        Largest value the detector records.
    psf_px : float
        σ (pixels) of a CCD's point spread applied to the counting noise,
        which makes it correlated between neighbours and smaller per pixel
        (expected profiles carry their own spread, ``psf_px`` of
        :func:`~napari_xrd.core.simulate.simulate_still`).

    Returns
    -------
    values : (n_slow, n_fast) float32 ndarray
    """
    lam = np.maximum(np.asarray(expected, dtype=np.float32), 0.0)
    # Poisson noise; above 25 expected photons the normal approximation
    # (skewness below 0.2) is used because it is several times faster
    counts = lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32)
    np.rint(counts, out=counts)
    np.maximum(counts, 0, out=counts)
    small = lam <= _NORMAL_ABOVE
    if small.all():
        counts = rng.poisson(lam).astype(np.float32)
    elif small.any():
        counts[small] = rng.poisson(lam[small])
    if psf_px > 0:
        # phosphor/taper point spread of a CCD: each photon's signal spreads
        # over neighbours, so noise is correlated and smaller per pixel while
        # the expected image (already rendered with the spread) is unchanged
        from scipy.ndimage import gaussian_filter

        counts = lam + gaussian_filter(counts - lam, np.float32(psf_px), mode="nearest", truncate=3.0)
    if gain != 1.0:
        counts *= np.float32(gain)
    if read_noise > 0:
        counts += rng.standard_normal(size=counts.shape, dtype=np.float32) * np.float32(read_noise)
    if offset:
        counts += np.float32(offset)
    if gain != 1.0 or read_noise > 0 or psf_px > 0:
        np.rint(counts, out=counts)
        np.maximum(counts, 0, out=counts)
    if saturation is not None:
        np.minimum(counts, np.float32(saturation), out=counts)
    return counts


def apply_markers(image: np.ndarray, pixel_mask: np.ndarray) -> np.ndarray:
    """Write CBF-style markers: -1 on ``GAP`` pixels, -2 on ``DEAD`` ones (in place)."""
    image[(pixel_mask & DEAD) != 0] = -2
    image[(pixel_mask & GAP) != 0] = -1
    return image
