"""Beam centre and tilt from the whole radial background: the azimuthal-uniformity fit.

Everything an X-ray image holds apart from the Bragg spots (air scatter,
solvent and water rings, ice or powder rings, the smooth fall-off of the
background) depends, to a very good approximation, on the scattering angle
2θ only, once the pixel's solid angle and the beam's polarisation are
divided out.  The right beam centre and tilt are the ones that make the
image a function of 2θ: with the wrong centre a ring or a slope of the
background shows up as a ``cos φ`` modulation around the beam.

:func:`fit_radial_background` models a block-binned frame as

    I(fast, slow) ≈ Ω · f(2θ) · (1 + g(2θ) (a cos 2φ + b sin 2φ))

with Ω the relative solid angle of the (possibly tilted) pixel, f a free
radial profile (one value per 2θ bin, linearly interpolated), g = sin²2θ /
(1 − sin²2θ / 2) the shape of the polarisation term, and (a, b) the
polarisation's strength and direction.  Beam centre, pitch and yaw are
found by non-linear least squares in which f, a and b are solved exactly at
every step (variable projection).  Bright outliers (spots, ice grains,
zingers) are clipped iteratively.

This uses every pixel, not only the ridge of a ring: it gives sub-pixel
centres on a broad water ring or a smooth air-scatter halo, where no ring
can be traced, and it sees the tilt through the way 2θ and the solid angle
vary across the detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_xrd.core.beam_center._common import block_sums, levenberg_marquardt
from napari_xrd.core.geometry import DetectorGeometry

__all__ = ["RadialFit", "fit_radial_background"]

#: leave-one-quadrant-out moves of the coarse fit (in coarse blocks) above
#: which the centre's uncertainty becomes the move (measured: up to 0.14 on
#: clean and spotty-ice frames, 0.25-1 on frames with loop scattering)
QUADRANT_FLAG_BLOCKS = 0.2

#: reduced χ² of the block fit above which the fine, ring-only stage runs
SHARP_CHI2 = 1.3


@dataclass
class RadialFit:
    """Result of :func:`fit_radial_background`.

    Attributes
    ----------
    geometry : DetectorGeometry
        Input geometry with the fitted beam centre (and pitch/yaw when fitted).
    center_sigma_px : float
        1-σ uncertainty of the beam centre (pixels), from the fit's
        covariance scaled by its reduced χ².
    tilt_sigma_deg : float
        1-σ uncertainty of pitch and yaw (the larger), NaN when not fitted.
    contrast : float
        Radial signal: how much of the binned image's variance the radial
        model explains beyond a flat image (0 for a flat frame).
    chi2 : float
        Reduced χ² of the final fit (1 for Poisson-limited residuals).
    n_blocks : int
        Binned pixels used.
    quadrant_spread_px : float
        Largest move of the centre when one quadrant of the detector is left
        out of the coarse fit (see ``quadrant_check``).
    non_radial : bool
        That move exceeded ``QUADRANT_FLAG_BLOCKS``: the image holds strong
        structure that is not a function of 2θ about any centre.
    factor : int
        Binning factor.
    sharp : bool
        The last pass ran on small blocks where the profile is steep: the
        image holds rings sharper than the coarse blocks (ice, powder).
    """

    geometry: DetectorGeometry
    center_sigma_px: float
    tilt_sigma_deg: float
    contrast: float
    chi2: float
    n_blocks: int
    factor: int
    quadrant_spread_px: float = 0.0
    non_radial: bool = False
    sharp: bool = False


class _Sums:
    """Block sums of counts and valid pixels at a base factor, aggregated to its multiples on demand."""

    def __init__(self, data, valid, base: int):
        self.base = base
        self.s, self.c = block_sums(data, valid, base)

    def at(self, factor: int):
        k = factor // self.base
        if k <= 1:
            return self.s, self.c
        h, w = self.s.shape[0] // k, self.s.shape[1] // k
        s = self.s[: h * k, : w * k].reshape(h, k, w, k).sum(axis=(1, 3))
        c = self.c[: h * k, : w * k].reshape(h, k, w, k).sum(axis=(1, 3))
        return s, c


class _Model:
    """Binned data and the model evaluation for one parameter vector."""

    def __init__(self, sums, geometry: DetectorGeometry, factor: int):
        s, c = sums.at(factor)
        full = c >= 0.75 * factor * factor
        rows, cols = np.nonzero(full)
        self.counts = c[rows, cols].astype(np.float64)
        self.mean = s[rows, cols] / self.counts
        self.fast = (cols + 0.5) * factor
        self.slow = (rows + 0.5) * factor
        self.geometry = geometry
        self.factor = factor
        self.keep = np.ones(self.mean.size, bool)
        # Poisson-like variance of a block mean, floored so empty frames do not divide by 0
        level = max(float(np.median(self.mean)), 1e-3) if self.mean.size else 1.0
        self.var = np.maximum(self.mean, 0.25 * level) / self.counts
        self.w = 1.0 / self.var
        self.pol = (0.0, 0.0)
        self.n_bins = 2
        self.tt_max = 1.0
        self.delta = 1.0
        self.t0 = 0.0
        self.jac = None

    def angles(self, p):
        """2θ, cos 2φ · g, sin 2φ · g and the solid angle of every block for ``p = (fast, slow, pitch, yaw)``."""
        g = self.geometry.replace(beam_center=(p[0], p[1]), pitch=p[2], yaw=p[3])
        r = g.rotation
        u = (self.fast - p[0]) * g.pixel_size
        v = (self.slow - p[1]) * g.pixel_size
        x = r[0, 0] * u + r[0, 1] * v
        y = r[1, 0] * u + r[1, 1] * v
        z = g.distance + r[2, 0] * u + r[2, 1] * v
        rho2 = x * x + y * y
        dist2 = rho2 + z * z
        tt = np.arctan2(np.sqrt(rho2), z)
        s2 = rho2 / dist2  # sin² 2θ
        gpol = s2 / (1.0 - 0.5 * s2) / np.maximum(rho2, 1e-30)
        c2 = gpol * (x * x - y * y)
        sn2 = gpol * (2.0 * x * y)
        dperp = g.perpendicular_distance
        omega = dperp**3 / (dist2 * np.sqrt(dist2))
        return tt, c2, sn2, omega

    def set_range(self, p, inner_blocks: float = 2.0):
        """Radial bins one block wide, except near the beam where they widen.

        The bin coordinate is ``(sqrt(2θ² + t0²) - t0) / Δ`` (``Δ`` the
        angular size of a block, ``t0 = inner_blocks · Δ``): linear far out,
        equal-area near the centre, so that no bin holds only a handful of
        blocks, where a free profile value would fit their noise.
        """
        tt = self.angles(p)[0]
        self.delta = self.geometry.pixel_size * self.factor / self.geometry.distance
        self.t0 = inner_blocks * self.delta
        self.tt_max = float(tt.max()) * 1.15 + 1e-3
        self.n_bins = int(np.clip(self._x(self.tt_max) + 2, 16, 8192))

    def _x(self, tt):
        return (np.sqrt(tt * tt + self.t0 * self.t0) - self.t0) / self.delta

    def residuals(self, p, *, fit_polarisation=False, all_blocks=False):
        """Normalised residuals (data - model) / σ of the kept blocks (all with ``all_blocks``)."""
        tt, c2, sn2, omega = self.angles(p)
        n = self.n_bins
        k = self.keep
        x = np.clip(self._x(tt), 0, n - 1 - 1e-9)
        i0 = x.astype(np.int64)
        fr = x - i0
        y, w = self.mean, self.w
        a, b = self.pol
        for _ in range(2 if fit_polarisation else 1):
            basis = omega * (1.0 + a * c2 + b * sn2)
            wb = (w * basis * basis)[k]
            wy = (w * basis * y)[k]
            ik, fk = i0[k], fr[k]
            g0, g1 = 1 - fk, fk
            diag = np.bincount(ik, wb * g0 * g0, n) + np.bincount(ik + 1, wb * g1 * g1, n + 1)[:n]
            off = np.bincount(ik, wb * g0 * g1, n)[: n - 1]
            rhs = np.bincount(ik, wy * g0, n) + np.bincount(ik + 1, wy * g1, n + 1)[:n]
            # empty bins (behind the beamstop, beyond the corners) get a tiny ridge
            # that keeps the system well posed
            prof = _solve_tridiagonal(diag + 1e-6 * (diag.max() + 1e-30), off, rhs)
            f = prof[i0] * (1 - fr) + prof[np.minimum(i0 + 1, n - 1)] * fr
            self.profile = prof
            if fit_polarisation:
                base = omega * f
                A = np.stack([base * c2, base * sn2], axis=1)[k]
                r0 = (y - base)[k]
                wk = w[k]
                m = A.T @ (A * wk[:, None]) + 1e-12 * np.eye(2)
                a, b = np.linalg.solve(m, A.T @ (r0 * wk))
        if fit_polarisation:
            self.pol = (float(a), float(b))
        model = omega * f * (1.0 + a * c2 + b * sn2)
        res = (y - model) * np.sqrt(w)
        return res if all_blocks else res[k]

    def cost(self, p):
        r = self.residuals(p)
        return float(r @ r)


def _solve_tridiagonal(diag, off, rhs):
    """Solve a symmetric tridiagonal system (LAPACK ``gtsv``, without scipy's checks: it runs hundreds of times)."""
    from scipy.linalg.lapack import dgtsv

    *_, x, info = dgtsv(off, diag, off, rhs)
    if info != 0:
        raise np.linalg.LinAlgError(f"tridiagonal solve failed (info={info})")
    return x


def _contrast(model: _Model, res) -> float:
    """Fraction of the kept blocks' variance (about a flat image) that the radial model explains."""
    y, w = model.mean[model.keep], model.w[model.keep]
    flat = float(np.sum((y - np.average(y, weights=w)) ** 2 * w))
    return max(0.0, 1.0 - float(res @ res) / max(flat, 1e-30))


def _quadrant_spread(model: _Model, p, free, *, max_iter: int = 3) -> float:
    """Largest centre move (pixels) over coarse refits that each leave one quadrant out."""
    keep0 = model.keep.copy()
    phi = np.arctan2(model.slow - p[1], model.fast - p[0])
    quadrant = ((phi + np.pi) // (np.pi / 2)).astype(np.int64) % 4
    centres = []
    try:
        # the full refit on this (coarse) model first: the moves are measured
        # from it, so the coarse model's own offset from the fine fit cancels
        for k in range(5):
            model.keep = keep0 & (quadrant != k) if k < 4 else keep0
            q, _ = _least_squares(model, p, free, max_iter)
            centres.append((q[0], q[1]))
    finally:
        model.keep = keep0
        model.residuals(p, fit_polarisation=True)
    full = centres[-1]
    return float(max(math.hypot(c[0] - full[0], c[1] - full[1]) for c in centres[:4]))


def _hessian(cost, p, steps):
    """Central-difference Hessian of ``cost`` at ``p`` with the given steps."""
    n = len(p)
    f0 = cost(p)
    h = np.zeros((n, n))
    e = [np.eye(n)[i] * steps[i] for i in range(n)]
    fp = [cost(p + e[i]) for i in range(n)]
    fm = [cost(p - e[i]) for i in range(n)]
    for i in range(n):
        h[i, i] = (fp[i] - 2 * f0 + fm[i]) / steps[i] ** 2
        for j in range(i + 1, n):
            fpp = cost(p + e[i] + e[j])
            fmm = cost(p - e[i] - e[j])
            # f(+i+j) + f(-i-j) - f(+i) - f(-i) - f(+j) - f(-j) + 2 f0 = 2 h_ij s_i s_j
            h[i, j] = h[j, i] = (fpp + fmm - fp[i] - fm[i] - fp[j] - fm[j] + 2 * f0) / (2 * steps[i] * steps[j])
    return h


def _least_squares(model: _Model, p, free, max_iter):
    """Polarisation and profile at ``p``, then Levenberg-Marquardt on the free parameters.

    Steps are in units of a quarter block and 0.05°.  Returns the new
    parameter vector and the Jacobian (per pixel and per degree), or None.
    """
    p = np.array(p, float)
    unit = np.array([model.factor / 4.0, model.factor / 4.0, 0.05, 0.05])[free]
    model.residuals(p, fit_polarisation=True)

    def fun(q):
        pp = p.copy()
        pp[free] = p[free] + q * unit
        return model.residuals(pp)

    q, jac = levenberg_marquardt(fun, int(free.sum()), max_iter=max_iter)
    out = p.copy()
    out[free] = p[free] + q * unit
    return out, None if jac is None else jac / unit[None, :]


def _fit_stage(model: _Model, p, free, clip_sigma, max_iter, rounds):
    """Clip outlying blocks, then least squares from ``p``; returns the new parameter vector."""
    p = np.array(p, float)
    for clip in (3 * clip_sigma, clip_sigma)[-rounds:]:
        model.keep[:] = True
        res = model.residuals(p, fit_polarisation=True, all_blocks=True)
        s = max(1.4826 * float(np.median(np.abs(res - np.median(res)))), 1e-9)
        model.keep = (res < clip * s) & (res > -2 * clip * s)
        p, model.jac = _least_squares(model, p, free, max_iter)
    return p


def fit_radial_background(
    image,
    *,
    geometry: DetectorGeometry,
    valid=None,
    fit_tilt: bool = True,
    blocks_across: tuple[int, ...] = (96, 160),
    sharp_blocks_across: int = 640,
    sharp_fraction: float = 0.08,
    clip_sigma: float = 5.0,
    max_iter: int = 6,
    starts=None,
    min_contrast: float = 0.05,
    quadrant_check: bool = True,
    max_tilt_deg: float = 10.0,
    cancel=None,
) -> RadialFit | None:
    """Fit beam centre (and tilt) by making the image a function of 2θ.

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
        One frame, counts.
    geometry : DetectorGeometry
        Start: its beam centre (within a few % of the detector's width of the
        truth), pitch and yaw, and the distance, wavelength and pixel size.
    valid : (n_slow, n_fast) bool ndarray, optional
        Pixels to use (exclude gaps, dead pixels and the beamstop's shadow).
    fit_tilt : bool
        Also fit pitch and yaw.
    blocks_across : tuple of int
        Coarse-to-fine stages: the image is block-binned to about this many
        blocks along its longer side at each stage.
    sharp_blocks_across, sharp_fraction : int, float
        When the coarse fit leaves structure it cannot model (sharp ice or
        powder rings narrower than a block, reduced χ² > 1.3), a last pass
        on blocks this fine, keeping only the given fraction where the
        radial profile is steepest.  0 turns it off.
    clip_sigma : float
        Blocks whose residual exceeds ``clip_sigma`` times the robust scatter
        (spots, ice grains, zingers) are left out; dark ones at twice that.
    max_iter : int
        Levenberg-Marquardt iterations per stage.
    starts : sequence of (fast, slow), optional
        Other starting beam centres: the coarsest stage is run from each and
        from the geometry's, and the best fit (lowest χ² per block) goes on.
    min_contrast : float
        When the coarsest stage explains less than this fraction of the
        image's variance (a flat frame), stop there and report an infinite
        uncertainty.
    quadrant_check : bool
        Refit (coarsely) with each quadrant about the centre left out; when
        the centre moves by more than ``QUADRANT_FLAG_BLOCKS`` coarse blocks,
        that move becomes the centre's uncertainty: a localised non-radial
        feature (loop scattering, a streak) otherwise biases the fit without
        showing in its curvature.
    max_tilt_deg : float
        A fitted tilt beyond this is taken as a failed fit (infinite
        uncertainty): the fit has explained a non-radial feature by tilting.
    cancel : callable, optional
        Checked between stages (see :mod:`napari_xrd.core.progress`).

    Returns
    -------
    RadialFit or None
        None when too few blocks are usable.

    Notes
    -----
    The uncertainty comes from the curvature of the cost (a finite-difference
    Hessian with steps of a coarse block and 0.1°), not from the local
    Jacobian: on a smooth halo, centre and tilt trade off along a shallow
    valley that the Jacobian of the piecewise-linear binned model hides.
    """
    from napari_xrd.core.progress import check_cancel

    data = np.asarray(image, dtype=np.float32)
    if valid is None:
        valid = np.isfinite(data) & (data >= 0)
    p = np.array([*geometry.beam_center, geometry.pitch, geometry.yaw], float)
    free = np.array([True, True, fit_tilt, fit_tilt])
    first = None
    model = None
    base = max(1, int(round(max(data.shape) / sharp_blocks_across))) if sharp_blocks_across else 1
    if not sharp_blocks_across:
        base = max(1, int(round(max(data.shape) / max(blocks_across))))
    sums = _Sums(data, valid, base)

    def stage_factor(across):
        # a multiple of the base factor, so the sums are aggregated, not recomputed
        return base * max(1, int(round(max(data.shape) / across / base)))

    candidates = [p.copy()] + [np.array([c[0], c[1], geometry.pitch, geometry.yaw], float) for c in (starts or [])]
    for stage, across in enumerate(blocks_across):
        factor = stage_factor(across)
        model = _Model(sums, geometry, factor)
        if model.mean.size < 200:
            return None
        model.set_range(p)
        best = None
        for p_start in candidates if stage == 0 else [p]:
            check_cancel(cancel)
            q = _fit_stage(model, p_start, free, clip_sigma, max_iter, rounds=2 if stage == 0 else 1)
            r = model.residuals(q)
            score = float(r @ r) / max(r.size, 1)
            if best is None or score < best[0]:
                best = (score, q, model.keep.copy(), model.pol)
        _, p, model.keep, model.pol = best
        if first is None:
            first = model
            c = _contrast(model, model.residuals(p))
            if c < min_contrast:
                # nothing radial in this frame: no point refining
                g = geometry.replace(beam_center=(float(p[0]), float(p[1])), pitch=float(p[2]), yaw=float(p[3]))
                return RadialFit(geometry=g, center_sigma_px=float("inf"),
                                 tilt_sigma_deg=float("inf") if fit_tilt else float("nan"), contrast=c,
                                 chi2=float("nan"), n_blocks=int(model.keep.sum()), factor=model.factor)
    model.residuals(p, fit_polarisation=True)
    res = model.residuals(p)
    chi2_coarse = float(res @ res) / max(res.size - model.n_bins, 1)
    sharp = bool(sharp_blocks_across) and chi2_coarse > SHARP_CHI2
    check_cancel(cancel)
    if sharp:
        # sharp rings the blocks cannot resolve: a last pass on small blocks,
        # only where the profile is steep (they hold the information)
        coarse = model
        factor = base
        model = _Model(sums, geometry, factor)
        model.pol = coarse.pol
        # the coarse profile's slope, looked up at the small blocks' 2θ
        n = coarse.n_bins
        grad = np.abs(np.gradient(coarse.profile))
        tt_f = model.angles(p)[0]
        # |df/d2θ| = |df/dx| · dx/d2θ, x being the coarse model's bin coordinate
        dxdt = tt_f / np.sqrt(tt_f**2 + coarse.t0**2) / coarse.delta
        slope = np.interp(coarse._x(tt_f), np.arange(n), grad) * dxdt
        sel = slope >= np.quantile(slope, 1.0 - sharp_fraction)
        for name in ("counts", "mean", "fast", "slow", "var", "w"):
            setattr(model, name, getattr(model, name)[sel])
        model.keep = np.ones(model.mean.size, bool)
        model.set_range(p)
        p = _fit_stage(model, p, free, clip_sigma, max(2, max_iter // 2), rounds=1)
        model.residuals(p, fit_polarisation=True)
        res = model.residuals(p)
    dof = max(res.size - int(free.sum()) - model.n_bins - 2, 1)
    chi2 = float(res @ res / dof)
    sig = None
    if sharp and model.jac is not None:
        # sharp rings: their gradients dominate the Jacobian, which is then a fair measure
        try:
            cov = np.linalg.inv(model.jac.T @ model.jac) * chi2
            sig = np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.inf))
        except np.linalg.LinAlgError:
            sig = None
    if sig is None:
        # uncertainty from the cost's curvature on the coarse model
        first.pol = model.pol
        c0 = first.residuals(p, fit_polarisation=True)
        chi2_first = float(c0 @ c0) / max(c0.size - first.n_bins, 1)
        steps = np.array([first.factor, first.factor, 0.1, 0.1], float)[free]

        def cost(q):
            pp = p.copy()
            pp[free] = q
            return first.cost(pp)

        h = _hessian(cost, p[free], steps)
        try:
            cov = np.linalg.inv(0.5 * h) * chi2_first
            sig = np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.inf))
        except np.linalg.LinAlgError:
            sig = np.full(int(free.sum()), np.inf)
    full_sig = np.full(4, np.nan)
    full_sig[free] = sig
    contrast = _contrast(model, res)
    # robustness: refit with each quadrant (about the centre) left out; a
    # non-radial feature (loop scattering's arc, a streak, a shadow) pulls the
    # full fit and the leave-one-out fits apart
    spread = _quadrant_spread(first, p, free, max_iter=3) if quadrant_check else 0.0
    center_sigma = math.hypot(full_sig[0], full_sig[1])
    non_radial = spread > QUADRANT_FLAG_BLOCKS * first.factor
    if math.hypot(p[2], p[3]) > max_tilt_deg:
        # no detector is mounted like that: the fit has explained something else by tilting
        center_sigma = float("inf")
        full_sig[2:] = np.inf
    if non_radial:
        # the coarse model's own scatter (a fifth of a block on frames with
        # spotty ice) is exceeded: something non-radial pulls the fit
        center_sigma = max(center_sigma, spread)
    elif not sharp:
        # a smooth profile's curvature can claim far more than the data hold:
        # on flat frames whose only "radial" structure is the falling density
        # of Bragg spots, the leave-one-quadrant-out centres moved by 3-5 px
        # while the curvature said 0.6-0.7 px (the centre was 9-16 px off).
        # (Not after the sharp-ring pass: its coarse spread includes the
        # coarse blocks' own scatter over ice grains.)
        center_sigma = max(center_sigma, 0.5 * spread)
    g = geometry.replace(beam_center=(float(p[0]), float(p[1])), pitch=float(p[2]), yaw=float(p[3]))
    return RadialFit(
        geometry=g,
        center_sigma_px=float(center_sigma),
        quadrant_spread_px=float(spread),
        non_radial=bool(non_radial),
        tilt_sigma_deg=float(np.nanmax(full_sig[2:])) if fit_tilt else float("nan"),
        contrast=contrast,
        chi2=chi2,
        n_blocks=int(model.keep.sum()),
        factor=model.factor,
        sharp=sharp,
    )
