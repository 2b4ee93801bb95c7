"""Still-image diffraction geometry: which reflections diffract, where, how strongly, how big.

Ewald construction (lab frame of :mod:`napari_xrd.core.geometry`, beam along
+z, no 2π): the incident wave vector is ``s0 = (0, 0, 1/λ)`` and a
reciprocal-lattice point ``r = UB @ hkl`` diffracts when ``|s0 + r| = 1/λ``.
Its excitation error is ``ε = |s0 + r| - 1/λ`` (Å⁻¹).

Partiality
    Mosaic spread (FWHM ``η``), bandpass (FWHM ``Δλ/λ``) and the size of the
    mosaic domains give the reciprocal-lattice point a Gaussian thickness
    across the Ewald sphere, ``σ_ε² = (|r| σ_η)² + (λ|r|²/2 · σ_bw)² +
    (1/D_domain)²``; the partiality is ``exp(-ε² / 2σ_ε²)`` (1 for a point
    on the sphere).  Reflections below ``min_partiality`` are dropped.
Rotation (oscillation) images
    With ``oscillation_deg > 0`` the crystal turns about ``rotation_axis``
    during the exposure.  The excitation error then runs linearly through
    ``ε_mid ± v Δφ/2`` with ``v = (e × r) · n`` (``n`` the sphere normal at
    the point), the partiality is the fraction of the Gaussian rocking
    profile swept, ``|Φ(ε_b/σ_ε) - Φ(ε_a/σ_ε)|``, the Lorentz factor is
    ``1 / (λ |v|)`` (``1/sin 2θ`` for an equatorial reflection) and the spot
    lies where the reflection diffracts, at the rotation angle where
    ``ε = 0`` (clipped to the exposure).
Spot position
    The mosaic block that diffracts has ``r`` rotated onto the sphere about
    the axis normal to ``r`` and the beam, so the spot lies at the exact Bragg
    angle ``2θ = 2 asin(λ|r|/2)`` and at the azimuth of ``r``,
    ``φ = atan2(r_y, r_x)``; :meth:`DetectorGeometry.project` puts that ray on
    the detector.
Spot shape
    A 2-D Gaussian whose covariance comes from angular spreads mapped through
    the local Jacobian of the projection: azimuthal ``σ_φ² = σ_η² +
    (σ_div / sin 2θ)²`` (mosaic blocks turning about the beam keep diffracting
    and smear the spot tangentially, more so farther out and at longer
    distance), radial ``σ_2θ² = (2 tanθ σ_bw)² + σ_div²`` (bandpass), plus an
    isotropic ``σ_0`` in pixels (beam footprint and detector point spread).
Intensity
    ``photons = scale · I_hkl · partiality · L · P`` with the still Lorentz
    factor ``L = 1 / sin 2θ`` (both Lorentz factors capped at 1/sin 2°) and the polarisation factor
    ``P`` for a beam polarised along lab x by fraction ``f``:
    ``P = f (1 - (k·x)²) + (1 - f)(1 - (k·y)²)`` for the unit ray ``k``.
"""

from __future__ import annotations

import math

import numpy as np

from napari_xrd.core.geometry import DetectorGeometry, lattice_points_near_sphere, ray_direction, still_ray

__all__ = [
    "predict_reflections",
    "polarization_factor",
    "spot_covariance",
    "render_spots",
    "FWHM_TO_SIGMA",
]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def polarization_factor(k: np.ndarray, fraction: float = 0.99) -> np.ndarray:
    """Polarisation factor for unit rays ``k`` (..., 3), beam polarised along lab x by ``fraction``."""
    return fraction * (1.0 - k[..., 0] ** 2) + (1.0 - fraction) * (1.0 - k[..., 1] ** 2)


_MIN_SIN_2THETA = math.sin(math.radians(2.0))


def _ndtr(x):
    from scipy.special import ndtr

    return ndtr(x)


def _rotate(v, axis, angle):
    """Rodrigues rotation of vectors ``v`` (n, 3) about unit ``axis`` by ``angle`` (scalar or (n,))."""
    angle = np.asarray(angle, dtype=float)
    c = np.cos(angle)[..., None] if angle.ndim else math.cos(float(angle))
    s = np.sin(angle)[..., None] if angle.ndim else math.sin(float(angle))
    return v * c + np.cross(axis, v) * s + np.outer(v @ axis, axis) * (1 - c)


def _excitation_sigma(r_len, wavelength, mosaicity_deg, bandpass, domain_size):
    s_eta = math.radians(mosaicity_deg) * FWHM_TO_SIGMA
    s_bw = bandpass * FWHM_TO_SIGMA
    s_dom = 0.0 if not domain_size else 1.0 / domain_size
    return np.sqrt((r_len * s_eta) ** 2 + (wavelength * r_len**2 / 2.0 * s_bw) ** 2 + s_dom**2 + 1e-12)


def predict_reflections(
    geometry: DetectorGeometry,
    ub: np.ndarray,
    *,
    d_min: float,
    mosaicity_deg: float = 0.1,
    bandpass: float = 2e-4,
    domain_size: float | None = None,
    min_partiality: float = 1e-3,
    margin_px: float = 8.0,
    oscillation_deg: float = 0.0,
    rotation_axis=(1.0, 0.0, 0.0),
) -> dict:
    """Reflections near the Ewald sphere that land on the detector.

    The lattice points in the shell ``1/λ ± n σ_ε`` about the sphere come
    from :func:`~napari_xrd.core.geometry.lattice_points_near_sphere`, so
    the cost grows with the number of reflections near the sphere, not the
    whole lattice.

    Parameters
    ----------
    geometry : DetectorGeometry
    ub : (3, 3) ndarray
        ``U @ B`` (Å⁻¹), integer hkl to lab-frame reciprocal vectors.
    d_min : float
        Resolution limit in Å.
    mosaicity_deg, bandpass, domain_size, min_partiality
        See the module docstring (mosaicity FWHM in degrees, bandpass FWHM
        ``Δλ/λ``, domain size in Å).
    margin_px : float
        Keep spots whose centre is this far outside the image (their tails
        still fall on it).
    oscillation_deg : float
        0 for a still.  Otherwise the crystal turns about ``rotation_axis``
        (lab frame) from its orientation ``ub`` through this angle during the
        exposure (rotation method); see the module docstring.

    Returns
    -------
    dict of ndarrays, one row per reflection
        ``hkl`` (n, 3) int, ``r`` (n, 3) (at the diffracting orientation),
        ``d`` (Å), ``excitation_error`` (Å⁻¹, at the middle of the
        exposure), ``partiality``, ``lorentz``, ``two_theta``, ``azimuth``
        (rad), ``ray`` (n, 3) unit vectors, ``fast``, ``slow`` (pixels,
        corner convention).
    """
    lam = geometry.wavelength
    radius = 1.0 / lam
    s0 = np.array([0.0, 0.0, radius])
    ub = np.asarray(ub, dtype=float)
    osc = math.radians(float(oscillation_deg))
    axis = np.asarray(rotation_axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    if osc:
        ub = _rotate(ub.T, axis, osc / 2.0).T  # enumerate at the middle of the exposure
    r_max = min(1.0 / d_min, 2.0 * radius * 0.9999)
    delta = math.sqrt(-2.0 * math.log(min_partiality)) * float(
        _excitation_sigma(r_max, lam, mosaicity_deg, bandpass, domain_size)
    ) + r_max * abs(osc) / 2.0
    hkl, r = lattice_points_near_sphere(ub, lam, r_max=r_max, half_width=delta)
    r_len = np.linalg.norm(r, axis=1)
    eps = np.linalg.norm(r + s0, axis=1) - radius
    sig = _excitation_sigma(r_len, lam, mosaicity_deg, bandpass, domain_size)
    if osc:
        # excitation error changes with the rotation angle at dε/dφ = (e × r) · n
        normal = (r + s0) / (eps + radius)[:, None]
        speed = np.einsum("ij,ij->i", np.cross(axis, r), normal)
        lo = eps - speed * osc / 2.0
        hi = eps + speed * osc / 2.0
        part = np.abs(_ndtr(hi / sig) - _ndtr(lo / sig))
        with np.errstate(divide="ignore"):
            phi = np.clip(np.where(speed != 0, -eps / speed, 0.0), -osc / 2.0, osc / 2.0)
        lorentz = 1.0 / np.maximum(lam * np.abs(speed), _MIN_SIN_2THETA)
    else:
        part = np.exp(-0.5 * (eps / sig) ** 2)
        phi = None
        lorentz = None
    keep = part >= min_partiality
    hkl, r, r_len, eps, part = hkl[keep], r[keep], r_len[keep], eps[keep], part[keep]
    if osc:
        r = _rotate(r, axis, phi[keep])  # the orientation at which the reflection diffracts
        lorentz = lorentz[keep]

    two_theta, azimuth, ray = still_ray(r, lam)
    if lorentz is None:
        lorentz = 1.0 / np.maximum(np.sin(two_theta), _MIN_SIN_2THETA)
    fs = geometry.project(ray)
    n_slow, n_fast = geometry.shape
    on = (
        np.all(np.isfinite(fs), axis=1)
        & (fs[:, 0] > -margin_px)
        & (fs[:, 0] < n_fast + margin_px)
        & (fs[:, 1] > -margin_px)
        & (fs[:, 1] < n_slow + margin_px)
    )
    return {
        "hkl": hkl[on],
        "r": r[on],
        "d": 1.0 / r_len[on],
        "excitation_error": eps[on],
        "partiality": part[on],
        "lorentz": lorentz[on],
        "two_theta": two_theta[on],
        "azimuth": azimuth[on],
        "ray": ray[on],
        "fast": fs[on, 0],
        "slow": fs[on, 1],
    }


def spot_covariance(
    geometry: DetectorGeometry,
    two_theta: np.ndarray,
    azimuth: np.ndarray,
    *,
    mosaicity_deg: float,
    bandpass: float,
    divergence_deg: float = 0.02,
    sigma0_px: float = 0.5,
) -> np.ndarray:
    """Covariance (pixels², fast/slow) of each spot's Gaussian profile.

    Parameters
    ----------
    geometry : DetectorGeometry
    two_theta, azimuth : (n,) ndarray
        Bragg angle and azimuth of each spot, radians.
    mosaicity_deg, bandpass, divergence_deg
        FWHM of mosaic spread (degrees), of ``Δλ/λ`` and of the beam
        divergence (degrees).
    sigma0_px : float
        Isotropic part (beam footprint, point spread), pixels.

    Returns
    -------
    cov : (n, 2, 2) ndarray
    """
    tt = np.asarray(two_theta, float)
    az = np.asarray(azimuth, float)
    h = 1e-4
    p0 = geometry.project(ray_direction(tt, az))
    p_t = geometry.project(ray_direction(tt + h, az))
    p_a = geometry.project(ray_direction(tt, az + h))
    jac = np.stack([(p_t - p0) / h, (p_a - p0) / h], axis=-1)  # (n, 2 [fs], 2 [tt, az])
    s_eta = math.radians(mosaicity_deg) * FWHM_TO_SIGMA
    s_div = math.radians(divergence_deg) * FWHM_TO_SIGMA
    s_bw = bandpass * FWHM_TO_SIGMA
    var_tt = (2.0 * np.tan(tt / 2.0) * s_bw) ** 2 + s_div**2
    var_az = s_eta**2 + (s_div / np.maximum(np.sin(tt), 1e-3)) ** 2
    cov = np.einsum("nij,nj,nkj->nik", jac, np.stack([var_tt, var_az], axis=-1), jac)
    cov[:, 0, 0] += sigma0_px**2
    cov[:, 1, 1] += sigma0_px**2
    return np.nan_to_num(cov, nan=sigma0_px**2)


_HALF_WIDTHS = np.array([1, 2, 3, 4, 6, 8, 11, 16, 24])


def render_spots(
    shape: tuple[int, int],
    fast: np.ndarray,
    slow: np.ndarray,
    cov: np.ndarray,
    *,
    n_sigma: float = 3.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian spot stamps: each spot's profile sampled at pixel centres, summing to 1.

    Only pixels within ``n_sigma`` (capped at 24 px) of a spot's centre are
    computed; spots are grouped by stamp size so the work is vectorised.
    The stamps are normalised before clipping at the image border, so a
    spot half off the detector keeps half its photons.

    Parameters
    ----------
    shape : (n_slow, n_fast)
    fast, slow : (n,) ndarray
        Spot centres, pixels, corner convention.
    cov : (n, 2, 2) ndarray
        Profile covariance (pixels²), see :func:`spot_covariance`.

    Returns
    -------
    spot : (m,) int ndarray
        Spot index of each stamp pixel.
    flat_index : (m,) int ndarray
        ``slow * n_fast + fast`` index of the pixel in the image.
    weight : (m,) float ndarray
        Fraction of the spot's photons in that pixel.
    """
    n_slow, n_fast = shape
    fast = np.asarray(fast, float)
    slow = np.asarray(slow, float)
    n = len(fast)
    if n == 0:
        e = np.empty(0, dtype=np.int64)
        return e, e, np.empty(0)
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    inv = np.stack([cov[:, 1, 1], -cov[:, 0, 1], cov[:, 0, 0]], axis=-1) / det[:, None]
    extent = n_sigma * np.sqrt(np.maximum(cov[:, 0, 0], cov[:, 1, 1]))
    bucket = np.searchsorted(_HALF_WIDTHS, np.ceil(extent)).clip(max=len(_HALF_WIDTHS) - 1)
    cx = fast - 0.5  # array-index coordinates (pixel centres on integers)
    cy = slow - 0.5
    ix0 = np.rint(cx).astype(np.int64)
    iy0 = np.rint(cy).astype(np.int64)
    out_s, out_i, out_w = [], [], []
    for b in np.unique(bucket):
        sel = np.flatnonzero(bucket == b)
        hw = int(_HALF_WIDTHS[b])
        o = np.arange(-hw, hw + 1)
        ox, oy = np.meshgrid(o, o)
        ox, oy = ox.ravel()[None, :], oy.ravel()[None, :]
        px = ix0[sel, None] + ox
        py = iy0[sel, None] + oy
        dx = px - cx[sel, None]
        dy = py - cy[sel, None]
        q = inv[sel, 0, None] * dx * dx + 2 * inv[sel, 1, None] * dx * dy + inv[sel, 2, None] * dy * dy
        w = np.exp(-0.5 * q)
        w /= w.sum(axis=1, keepdims=True)
        inside = (px >= 0) & (px < n_fast) & (py >= 0) & (py < n_slow) & (w > 1e-7)
        out_s.append(np.broadcast_to(sel[:, None], w.shape)[inside])
        out_i.append((py * n_fast + px)[inside])
        out_w.append(w[inside])
    return np.concatenate(out_s), np.concatenate(out_i), np.concatenate(out_w)
