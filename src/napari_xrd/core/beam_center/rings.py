"""Beam centre and detector tilt from powder-like rings (water, ice, salt...).

A ring of scattering angle 2θ is a cone about the beam; a tilted detector cuts
it in a conic (an ellipse at protein-crystallography angles) whose centre is
*not* the beam centre.  Rather than fitting ellipses and untangling them, the
geometry is fitted directly, as powder-calibration programs do with a known
calibrant, except that the rings' 2θ are free parameters here (water or an
unknown powder carry no calibrant d-spacing):

1. :func:`find_rings`: a radial profile (median over azimuth, robust to spots
   and masks) about a coarse centre; ring peaks stand above a rolling
   baseline.
2. :func:`ring_points`: for each ring, in each azimuth sector, the ring's
   radial peak is located to a fraction of a pixel on the full-resolution
   image (median over a few rays, so spots, gaps, dead pixels and the
   beamstop arm drop out).
3. :func:`fit_rings`: least squares (soft-L1, so stray points do not pull)
   over beam centre, pitch, yaw and one 2θ per ring of
   ``2θ_geometry(point) - 2θ_ring``, expressed in pixels.  Distance and
   wavelength are the header's.

Several concentric rings fix the tilt to first order (ring centres move by
``≈ D tan²(2θ) tan(τ)``, differently for each 2θ); a single ring fixes it only
through its eccentricity (second order), so a small tilt is then poorly
determined.  :func:`fit_rings` reports the covariance and leaves the tilt at
zero when it cannot be determined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from napari_xrd.core.beam_center._common import block_mean, polar_directions, sample
from napari_xrd.core.geometry import DetectorGeometry

__all__ = [
    "RingFit",
    "find_rings",
    "ring_points",
    "ring_pixels",
    "fit_rings",
    "recentre_by_ring_shifts",
    "refine_with_rings",
]


@dataclass
class RingFit:
    """Result of a ring fit.

    Attributes
    ----------
    geometry : DetectorGeometry
        Refined geometry (beam centre, pitch, yaw).
    two_theta : list of float
        Fitted 2θ of each ring, radians.
    center_sigma_px : float
        1-σ uncertainty of the beam centre (largest axis), pixels.
    tilt_sigma_deg : float
        1-σ uncertainty of pitch/yaw (largest), degrees; ``inf`` when the
        tilt was not determinable and held at zero.
    tilt_determined : bool
    rms_px : float
        RMS residual of the ring points, pixels.
    n_points : list of int
        Points used per ring.
    """

    geometry: DetectorGeometry
    two_theta: list = field(default_factory=list)
    center_sigma_px: float = float("inf")
    tilt_sigma_deg: float = float("inf")
    tilt_determined: bool = False
    rms_px: float = float("nan")
    n_points: list = field(default_factory=list)


def _binned(data, valid, target_size):
    f = max(1, int(math.ceil(max(data.shape) / target_size)))
    small, ok = block_mean(data, valid=valid, factor=f)
    return small, ok, f


def _radial_scale(geometry: DetectorGeometry, two_theta) -> np.ndarray:
    """Pixels per radian of 2θ at the ring (untilted approximation)."""
    return geometry.distance / (geometry.pixel_size * np.cos(two_theta) ** 2)


def find_rings(
    data: np.ndarray,
    valid: np.ndarray,
    geometry: DetectorGeometry,
    *,
    max_rings: int = 8,
    min_snr: float = 5.0,
    target_size: int = 640,
    min_two_theta: float = 0.0,
    binned=None,
) -> list[tuple[float, float]]:
    """Find ring-like maxima of the radial profile.

    Parameters
    ----------
    data : (n_slow, n_fast) float ndarray
    valid : (n_slow, n_fast) bool ndarray
    geometry : DetectorGeometry
        Current (coarse) geometry.
    max_rings : int
    min_snr : float
        Minimum peak prominence over the profile noise.
    target_size : int
        Long side of the binned image used for the profile.
    min_two_theta : float
        Ignore maxima below this 2θ (radians): the beamstop's edge.

    Returns
    -------
    rings : list of (two_theta, half_width)
        Radians, strongest first.
    """
    from scipy.ndimage import gaussian_filter1d, minimum_filter1d
    from scipy.signal import find_peaks

    small, ok, f = binned if binned is not None else _binned(data, valid, target_size)
    g = geometry.replace(
        shape=small.shape,
        pixel_size=geometry.pixel_size * f,
        beam_center=(geometry.beam_center[0] / f, geometry.beam_center[1] / f),
    )
    _, d_min = g.d_range()
    tt_max = 2 * math.asin(min(1.0, g.wavelength / (2 * d_min)))
    n_tt = int(min(1200, max(200, 1.2 * max(small.shape))))
    tt = np.linspace(0, tt_max, n_tt + 1)[1:]
    az = np.linspace(-np.pi, np.pi, 120, endpoint=False)
    pts = g.project(polar_directions(tt, az))
    vals = sample(small, ok, pts[..., 0], pts[..., 1], order=1)
    counts = np.isfinite(vals).sum(axis=0)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            prof = np.nanmedian(vals, axis=0)
    good = counts >= 12
    if good.sum() < 20:
        return []
    idx = np.arange(n_tt)
    prof = np.interp(idx, idx[good], prof[good])
    prof = np.log(np.clip(prof, 1e-3, None))
    dtt = tt[1] - tt[0]
    base_w = max(9, int(round(math.radians(8.0) / dtt)))
    base = gaussian_filter1d(minimum_filter1d(prof, base_w, mode="nearest"), base_w / 4, mode="nearest")
    base = np.minimum(base, prof)
    sig = prof - base
    noise = 1.4826 * np.median(np.abs(prof - gaussian_filter1d(prof, 2.0))) + 1e-6
    found = {}
    # peaks above the rolling baseline (sharp rings) and of the profile itself (broad rings)
    for curve in (sig, prof):
        peaks, props = find_peaks(curve, prominence=min_snr * noise, width=(1, None))
        for k, pk in enumerate(peaks):
            # ignore the beamstop region: the first 3% of the radial range
            if pk <= 0.03 * n_tt or not good[pk] or tt[pk] - props["widths"][k] * dtt < min_two_theta:
                continue
            near = [q for q in found if abs(q - pk) <= max(2, props["widths"][k] / 2)]
            if near:
                continue
            # a "ring" whose half width reaches down towards 2θ = 0 is the
            # beamstop's edge or small-angle scatter, not a ring
            if tt[pk] - props["widths"][k] * dtt < 0.4 * tt[pk]:
                continue
            found[pk] = (props["prominences"][k], props["widths"][k])
    order = sorted(found, key=lambda q: -found[q][0])[:max_rings]
    return [(float(tt[q]), float(max(found[q][1], 2.0) * dtt)) for q in order]


def ring_points(
    data: np.ndarray,
    valid: np.ndarray,
    geometry: DetectorGeometry,
    two_theta: float,
    half_width: float,
    *,
    n_sectors: int = 180,
    n_rays: int = 4,
    n_samples: int = 41,
    min_snr: float = 3.0,
    statistic: str = "median",
) -> np.ndarray:
    """Sub-pixel ring positions, one per azimuth sector where the ring is clear.

    Parameters
    ----------
    data, valid : (n_slow, n_fast) ndarrays
        Full-resolution frame and valid-pixel map.
    geometry : DetectorGeometry
        Current geometry; the ring is searched within ``two_theta ±
        half_width`` (radians) along each azimuth.
    n_sectors, n_rays, n_samples : int
        Azimuth sectors, rays per sector (median-combined), radial samples.
    min_snr : float
        Peak height over the sector's noise to accept a point.
    statistic : {"median", "mean"}
        How a sector's rays are combined: the median ignores spots and
        masked pixels; the mean keeps spotty (few-grain) powder rings.

    Returns
    -------
    points : (m, 2) ndarray
        ``(fast, slow)`` corner-convention positions of the ring.
    """
    az = (
        -np.pi
        + (np.arange(n_sectors)[:, None] + (np.arange(n_rays)[None, :] + 0.5) / n_rays) * 2 * np.pi / n_sectors
    ).ravel()
    tt = np.linspace(two_theta - half_width, two_theta + half_width, n_samples)
    tt = tt[tt > 0]
    if len(tt) < 9:
        return np.empty((0, 2))
    pts = geometry.project(polar_directions(tt, az))
    vals = sample(data, valid, pts[..., 0], pts[..., 1], order=1)
    vals = vals.reshape(n_sectors, n_rays, len(tt))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prof = (np.nanmedian if statistic == "median" else np.nanmean)(vals, axis=1)  # (n_sectors, n_tt)
    out_tt = np.full(n_sectors, np.nan)
    n = len(tt)
    x = np.arange(n, dtype=float)
    good = np.isfinite(prof).sum(axis=1) >= 0.75 * n
    if good.sum() < 8:
        return np.empty((0, 2))
    # each sector's profile minus the straight line through its ends
    e = max(2, n // 10)
    filled = np.empty_like(prof)
    for k in range(n_sectors):
        p = prof[k]
        okp = np.isfinite(p)
        filled[k] = np.interp(x, x[okp], p[okp]) if okp.sum() >= 2 else 0.0
    left = np.median(filled[:, :e], axis=1)[:, None]
    right = np.median(filled[:, -e:], axis=1)[:, None]
    resid = filled - (left + (right - left) * x[None, :] / (n - 1))
    template = np.median(resid[good], axis=0)
    t_ref = float(np.sum(x * np.clip(template, 0, None)) / max(np.sum(np.clip(template, 0, None)), 1e-12))
    noise = 1.4826 * np.median(np.abs(np.diff(resid, axis=1)), axis=1) / math.sqrt(2) + 1e-9
    if np.max(template) < min_snr * np.median(noise[good]) / math.sqrt(n_rays):
        return np.empty((0, 2))
    # shift of each sector against the template: normalised cross-correlation
    max_lag = n // 4
    lags = np.arange(-max_lag, max_lag + 1)
    tc = template - template.mean()
    rows = np.flatnonzero(good & (resid.max(axis=1) >= min_snr * noise))
    if len(rows) == 0:
        return np.empty((0, 2))
    rr = resid[rows]
    cc = np.empty((len(rows), len(lags)))
    for i, L in enumerate(lags):
        if L >= 0:
            a_, b_ = rr[:, L:], tc[: n - L]
        else:
            a_, b_ = rr[:, : n + L], tc[-L:]
        a_ = a_ - a_.mean(axis=1, keepdims=True)
        b_ = b_ - b_.mean()
        cc[:, i] = (a_ @ b_) / (np.linalg.norm(a_, axis=1) * np.linalg.norm(b_) + 1e-12)
    best = np.argmax(cc, axis=1)
    for row, k, i in zip(range(len(rows)), rows, best):
        if i == 0 or i == len(lags) - 1 or cc[row, i] < 0.3:
            continue
        c0, c1, c2 = cc[row, i - 1], cc[row, i], cc[row, i + 1]
        den = c0 - 2 * c1 + c2
        d = 0.5 * (c0 - c2) / den if den < 0 else 0.0
        out_tt[k] = tt[0] + (t_ref + lags[i] + d) * (tt[1] - tt[0])
    sel = np.isfinite(out_tt)
    if not sel.any():
        return np.empty((0, 2))
    azc = -np.pi + (np.arange(n_sectors) + 0.5) * 2 * np.pi / n_sectors
    t = out_tt[sel]
    a = azc[sel]
    k = np.stack([np.sin(t) * np.cos(a), np.sin(t) * np.sin(a), np.cos(t)], axis=-1)
    xy = geometry.project(k)
    return xy[np.all(np.isfinite(xy), axis=1)]


def ring_pixels(
    data: np.ndarray,
    valid: np.ndarray,
    geometry: DetectorGeometry,
    two_theta: float,
    half_width: float,
    *,
    k_sigma: float = 4.0,
    max_points: int = 3000,
) -> np.ndarray:
    """Bright pixels of a spotty (few-grain) powder ring.

    The annulus ``two_theta ± half_width`` is resampled at about one pixel
    spacing; samples brighter than their azimuth sector's median by
    ``k_sigma`` robust deviations are kept (the brightest ``max_points``).
    Fitting the geometry to them minimises the spread of 2θ of the ring's
    pixels, which works where per-sector profiles are mostly empty.

    Returns
    -------
    points : (m, 2) ndarray
        ``(fast, slow)`` of the selected samples.
    """
    scale = float(_radial_scale(geometry, two_theta))
    radius = geometry.distance * math.tan(two_theta) / geometry.pixel_size
    n_az = int(min(4000, max(360, 2 * math.pi * radius)))
    n_rad = int(min(41, max(9, 2 * half_width * scale)))
    tt = np.linspace(two_theta - half_width, two_theta + half_width, n_rad)
    tt = tt[tt > 0]
    az = -np.pi + (np.arange(n_az) + 0.5) * 2 * np.pi / n_az
    pts = geometry.project(polar_directions(tt, az))
    vals = sample(data, valid, pts[..., 0], pts[..., 1], order=0)
    n_sec = 64
    per = n_az // n_sec
    v = vals[: per * n_sec].reshape(n_sec, per * len(tt))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(v, axis=1)
        mad = 1.4826 * np.nanmedian(np.abs(v - med[:, None]), axis=1)
    mad = np.maximum(mad, np.sqrt(np.maximum(med, 1.0)) * 0.5)
    bg = np.repeat(med, per)
    thr = np.repeat(med + k_sigma * mad, per)
    vv = vals[: per * n_sec]
    excess = np.where(np.isfinite(vv) & (vv > thr[:, None]), vv - bg[:, None], 0.0)
    idx = np.flatnonzero(excess.ravel() > 0)
    if len(idx) > max_points:
        idx = idx[np.argsort(excess.ravel()[idx])[-max_points:]]
    p = pts[: per * n_sec].reshape(-1, 2)[idx]
    return p[np.all(np.isfinite(p), axis=1)]


def fit_rings(
    points: list[np.ndarray],
    geometry: DetectorGeometry,
    *,
    fit_tilt: bool = True,
    max_tilt_sigma_deg: float = 1.5,
) -> RingFit:
    """Least-squares fit of beam centre, pitch and yaw to ring points.

    Parameters
    ----------
    points : list of (m_k, 2) ndarrays
        ``(fast, slow)`` points of each ring.
    geometry : DetectorGeometry
        Start; its distance and wavelength are held fixed.
    fit_tilt : bool
        Also fit pitch and yaw.
    max_tilt_sigma_deg : float
        If the fitted tilt is less certain than this, refit with the tilt
        held at zero and report it as not determined.

    Returns
    -------
    RingFit
    """
    from scipy.optimize import least_squares

    rings = [p for p in points if len(p) >= 8]
    if not rings:
        return RingFit(geometry=geometry)
    # at most 400 points a ring (evenly thinned) keep the solver fast
    rings = [p[np.linspace(0, len(p) - 1, 400).astype(int)] if len(p) > 400 else p for p in rings]
    f = np.concatenate([p[:, 0] for p in rings])
    s = np.concatenate([p[:, 1] for p in rings])
    ring_id = np.concatenate([np.full(len(p), i) for i, p in enumerate(rings)])
    tt0 = np.array([np.median(geometry.two_theta_at(p[:, 0], p[:, 1])) for p in rings])
    scale = _radial_scale(geometry, tt0)[ring_id]
    n_r = len(rings)

    def build(x, tilt):
        if tilt:
            return geometry.replace(beam_center=(x[0], x[1]), pitch=x[2], yaw=x[3]), x[4:]
        return geometry.replace(beam_center=(x[0], x[1]), pitch=0.0, yaw=0.0), x[2:]

    def resid(x, tilt):
        g, tts = build(x, tilt)
        return (g.two_theta_at(f, s) - tts[ring_id]) * scale

    def run(tilt):
        x0 = [geometry.beam_center[0], geometry.beam_center[1]]
        if tilt:
            x0 += [geometry.pitch, geometry.yaw]
        x0 = np.array(x0 + list(tt0))
        xs = np.array([1.0, 1.0] + ([0.1, 0.1] if tilt else []) + [1e-3] * n_r)
        lo = np.full(len(x0), -np.inf)
        hi = np.full(len(x0), np.inf)
        if tilt:
            lo[2:4], hi[2:4] = -15.0, 15.0
            x0[2:4] = np.clip(x0[2:4], -14.0, 14.0)
        sol = least_squares(
            resid, x0, args=(tilt,), bounds=(lo, hi), loss="soft_l1", f_scale=0.5, x_scale=xs, method="trf",
            max_nfev=100, tr_solver="lsmr",
        )
        r = sol.fun
        dof = max(1, len(r) - len(x0))
        # robust scale of residuals; covariance from the Gauss-Newton approximation
        sigma = 1.4826 * np.median(np.abs(r)) + 1e-6
        inlier = np.abs(r) < 4 * sigma
        sigma = math.sqrt(float(np.sum(r[inlier] ** 2)) / max(1, inlier.sum() - len(x0)))
        jac = sol.jac[inlier]
        try:
            cov = np.linalg.inv(jac.T @ jac) * sigma**2
        except np.linalg.LinAlgError:
            cov = np.full((len(x0), len(x0)), np.inf)
        return sol.x, cov, float(np.sqrt(np.mean(r[inlier] ** 2))), dof

    # one ring's ellipse gives |tilt| only up to a sign that trades off against
    # the centre; tilt needs rings at two or more 2θ
    spread = float(np.ptp(tt0)) if n_r > 1 else 0.0
    if n_r < 2 or spread < math.radians(1.0):
        fit_tilt = False
    x, cov, rms, _ = run(fit_tilt)
    tilt_ok = fit_tilt
    if fit_tilt:
        tsig = float(np.sqrt(max(cov[2, 2], cov[3, 3])))
        if not np.isfinite(tsig) or tsig > max_tilt_sigma_deg or max(abs(x[2]), abs(x[3])) > 14.9:
            x, cov, rms, _ = run(False)
            tilt_ok = False
    g, tts = build(x, tilt_ok)
    csig = float(np.sqrt(max(cov[0, 0], cov[1, 1])))
    return RingFit(
        geometry=g,
        two_theta=[float(t) for t in tts],
        center_sigma_px=csig,
        tilt_sigma_deg=float(np.sqrt(max(cov[2, 2], cov[3, 3]))) if tilt_ok else float("inf"),
        tilt_determined=tilt_ok,
        rms_px=rms,
        n_points=[len(p) for p in rings],
    )


def recentre_by_ring_shifts(
    data: np.ndarray,
    valid: np.ndarray,
    geometry: DetectorGeometry,
    *,
    max_shift_px: float = 40.0,
    n_sectors: int = 72,
    target_size: int = 640,
    binned=None,
) -> DetectorGeometry:
    """Move the centre so that the rings are concentric (tilt held).

    A centre error ``(Δf, Δs)`` shifts every ring radially by ``Δf cos φ +
    Δs sin φ`` pixels at azimuth ``φ``.  Each sector's radial profile is
    cross-correlated with the median profile; the shifts are fitted (robustly)
    by that sinusoid.  Captures centre errors of tens of pixels cheaply.
    """
    from scipy.ndimage import gaussian_filter1d

    small, ok, f = binned if binned is not None else _binned(data, valid, target_size)
    g = geometry.replace(
        shape=small.shape,
        pixel_size=geometry.pixel_size * f,
        beam_center=(geometry.beam_center[0] / f, geometry.beam_center[1] / f),
    )
    _, d_min = g.d_range()
    tt_max = 2 * math.asin(min(1.0, g.wavelength / (2 * d_min)))
    # radius sampled uniformly in pixels (untilted approximation) so shifts are in pixels
    r_max = g.distance * math.tan(tt_max) / g.pixel_size
    n_r = int(r_max)
    radius = np.arange(max(4, n_r // 12), n_r) + 0.5
    tt = np.arctan(radius * g.pixel_size / g.distance)
    az = -np.pi + (np.arange(n_sectors) + 0.5) * 2 * np.pi / n_sectors
    sub = (np.arange(3) - 1) * (np.pi / n_sectors / 1.5)
    azs = (az[:, None] + sub[None, :]).ravel()
    pts = g.project(polar_directions(tt, azs))
    vals = sample(small, ok, pts[..., 0], pts[..., 1], order=1).reshape(n_sectors, 3, len(tt))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prof = np.nanmedian(vals, axis=1)
        lp = np.log(np.clip(prof, 1e-3, None))
        # band-pass: keep ring-scale structure
        lp = np.where(np.isfinite(lp), lp, np.nan)
        ref = np.nanmedian(lp, axis=0)
    fill = np.where(np.isfinite(lp), lp, ref[None, :])
    fill = np.where(np.isfinite(fill), fill, 0.0)
    bp = gaussian_filter1d(fill, 1.0, axis=1) - gaussian_filter1d(fill, 25.0, axis=1)
    rbp = np.nanmedian(bp, axis=0)
    maxs = int(max_shift_px / f) + 1
    shifts = np.full(n_sectors, np.nan)
    weights = np.isfinite(lp).mean(axis=1)
    lags = np.arange(-maxs, maxs + 1)
    for k in range(n_sectors):
        if weights[k] < 0.3:
            continue
        a = bp[k]
        cc = np.array([np.dot(a[maxs + L : len(a) - maxs + L], rbp[maxs : len(a) - maxs]) for L in lags])
        i = int(np.argmax(cc))
        if 0 < i < len(cc) - 1:
            den = cc[i - 1] - 2 * cc[i] + cc[i + 1]
            d = 0.5 * (cc[i - 1] - cc[i + 1]) / den if den < 0 else 0.0
            shifts[k] = lags[i] + d
    sel = np.isfinite(shifts)
    if sel.sum() < 8:
        return geometry
    a = np.stack([np.cos(az[sel]), np.sin(az[sel])], axis=1)
    y = shifts[sel]
    w = np.ones(len(y))
    for _ in range(3):  # iteratively reweighted least squares
        sol = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)[0]
        res = y - a @ sol
        mad = 1.4826 * np.median(np.abs(res)) + 0.25
        w = 1.0 / np.maximum(1.0, np.abs(res) / (2 * mad))
    bf, bs = geometry.beam_center
    return geometry.replace(beam_center=(bf + sol[0] * f, bs + sol[1] * f))


def refine_with_rings(
    data: np.ndarray,
    valid: np.ndarray,
    geometry: DetectorGeometry,
    *,
    n_iter: int = 4,
    fit_tilt: bool = True,
    recentre: bool = True,
    max_ring_rms_px: float = 2.0,
    min_two_theta: float = 0.0,
) -> RingFit | None:
    """Find rings about ``geometry``'s centre and fit centre and tilt to them.

    Coarse-to-fine: ring-shift recentring on a binned image, ring search,
    then alternating full-resolution ring-point extraction and geometry fits
    with shrinking search windows.  Rings whose points scatter by more than
    ``max_ring_rms_px`` about the fit are dropped (spurious peaks, spot
    clusters); broad rings are allowed 5% of their width.

    Returns None when no usable ring is found.
    """
    g = geometry
    binned = _binned(data, valid, 640)
    if recentre:
        for _ in range(2):
            g = recentre_by_ring_shifts(data, valid, g, binned=binned)
    rings = find_rings(data, valid, g, min_two_theta=min_two_theta, binned=binned)
    if not rings:
        return None
    fit = None
    for it in range(n_iter):
        window_px = (12.0, 8.0, 5.0, 5.0)[min(it, 3)]
        pts, limits = [], []
        for tt, hw in rings:
            scale = float(_radial_scale(g, tt))
            w = max(hw * (1.5 if it == 0 else 1.0), window_px / scale)
            p = ring_points(data, valid, g, tt, w)
            limit = max(max_ring_rms_px, 0.05 * 2 * hw * scale)
            if len(p) < 36:  # a spotty ring (few grains): fit its bright pixels
                w = max(hw * 1.5, 12.0 / scale)
                p2 = ring_pixels(data, valid, g, tt, w)
                if len(p2) >= 50:
                    # a ring's pixels crowd at one 2θ; spots that merely fall in
                    # the annulus spread over all of it
                    r = g.two_theta_at(p2[:, 0], p2[:, 1]) * scale
                    spread = 1.4826 * float(np.median(np.abs(r - np.median(r))))
                    if it == 0 or spread < 0.3 * w * scale:
                        p, limit = p2, 0.3 * w * scale
            pts.append(p)
            limits.append(limit)
        keep = [i for i, p in enumerate(pts) if len(p) >= 30 and rings[i][0] > min_two_theta]
        if not keep:
            return fit
        trial = fit_rings([pts[i] for i in keep], g, fit_tilt=fit_tilt)
        # per-ring scatter about the fit: drop rings that are not rings
        rms = []
        for j, i in enumerate(keep):
            p = pts[i]
            tt_p = trial.geometry.two_theta_at(p[:, 0], p[:, 1])
            r = (tt_p - trial.two_theta[j]) * _radial_scale(g, trial.two_theta[j])
            rms.append(1.4826 * float(np.median(np.abs(r))))
        good = [j for j in range(len(keep)) if rms[j] <= limits[keep[j]]]
        if not good:
            return fit
        if len(good) < len(keep):
            keep = [keep[j] for j in good]
            trial = fit_rings([pts[i] for i in keep], g, fit_tilt=fit_tilt)
        fit = trial
        rings = [(fit.two_theta[j], rings[i][1]) for j, i in enumerate(keep)]
        g = fit.geometry
    return fit
