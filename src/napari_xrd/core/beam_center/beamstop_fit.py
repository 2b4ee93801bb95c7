"""The beamstop's shadow as a likelihood model: a soft-edged disc on the end of an arm.

:func:`~napari_xrd.core.beam_center.beamstop.find_beamstop` traces the disc's
edge where the frame is bright and the disc in the open.  On a weak frame (a
photon per pixel or less) a traced edge is noise, and on a detector whose
middle is a module gap (Pilatus 6M, EIGER 16M: where the beam is usually
put) most of the disc is hidden, and what is left looks like the end of the
arm.  :func:`fit_beamstop_shadow` then fits the counts of every measured
pixel round the shadow by Poisson maximum likelihood:

    m = f + (L - f) (1 - max(D, A))

with ``D`` a disc of radius ``r`` and ``A`` an arm of half-width ``a`` that
starts at the disc's centre and runs in direction ``θ`` (both with logistic
edges of width ``w``), ``f`` the counts in the shadow (transmission, a CCD's
pedestal) and ``L`` the open level (a plane plus a radial slope about the
start, for the air-scatter halo).  Modelling the arm keeps a stretch of arm
from being taken for a disc (it would leave arm on both sides), and makes
the disc's centre lie on the arm's axis.

The centre's uncertainty is the larger of the Fisher information's and of a
profile: the fall of the likelihood a radius away in eight directions and
further along and across the arm, the other parameters refitted.  Where the disc hides in a gap the likelihood
is flat along the gap, and the profile says so.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["arm_direction", "fit_beamstop_shadow"]


def arm_direction(data, valid, center, radius) -> float | None:
    """Direction of the beamstop's arm (radians, ``atan2(slow, fast)``), or None.

    Counts are pooled in 5° sectors of the annulus 1.5–4 radii from the
    disc's centre, per measured pixel (gaps do not darken a sector): the arm
    is the darkest 15° if it is photon-significantly (8σ) and clearly (below
    0.6 of the median sector) darker than the annulus.

    Parameters
    ----------
    data, valid : (h, w) ndarray
        Counts and measured pixels.
    center : (fast, slow)
        Disc centre, pixels (corner convention).
    radius : float
        Disc radius, pixels.
    """
    h, w = data.shape
    yy, xx = np.mgrid[0:h, 0:w]
    dx, dy = xx + 0.5 - center[0], yy + 0.5 - center[1]
    rho = np.hypot(dx, dy)
    sel = valid & (rho > 1.5 * radius) & (rho < 4.0 * radius + 4)
    if sel.sum() < 100:
        return None
    b = ((np.degrees(np.arctan2(dy[sel], dx[sel])) + 180.0) // 5.0).astype(int) % 72
    counts = np.bincount(b, weights=data[sel].astype(np.float64), minlength=72)
    n = np.bincount(b, minlength=72).astype(np.float64)
    if (n >= 5).sum() < 36:
        return None
    mean = np.where(n >= 5, counts / np.maximum(n, 1), np.nan)
    typical = float(np.nanmedian(mean))
    k = np.arange(72)
    c3 = counts[k] + counts[(k + 1) % 72] + counts[(k - 1) % 72]
    n3 = n[k] + n[(k + 1) % 72] + n[(k - 1) % 72]
    deficit = (typical * n3 - c3) / np.sqrt(np.maximum(typical * n3, 1e-9))
    deficit[n3 < 15] = -np.inf
    i = int(np.argmax(deficit))
    if deficit[i] < 8.0 or c3[i] / max(n3[i], 1) > 0.6 * typical:
        return None
    idx = (i + np.arange(-3, 4)) % 72
    wts = np.clip(typical - np.nan_to_num(mean[idx], nan=typical), 0.0, None)
    ang = np.radians(idx * 5.0 + 2.5 - 180.0)
    return math.atan2(float(np.sum(wts * np.sin(ang))), float(np.sum(wts * np.cos(ang))))


class _ShadowModel:
    """Counts of the disc-and-arm model and their derivatives on a set of pixels."""

    # parameter order
    CX, CY, R, LOGW, FLOOR, L0, GX, GY, GR, THETA, HALF = range(11)

    def __init__(self, x, y, d, x0, y0, scale, with_arm, area=1):
        self.x, self.y, self.d = x.astype(np.float64), y.astype(np.float64), d
        self.area = area  # pixels per bin: counts, floor and level are per bin
        self.px, self.py = (x - x0) / scale, (y - y0) / scale
        self.pr = np.hypot(x - x0, y - y0) / scale
        self.with_arm = with_arm

    def counts(self, q, grad=False):
        cx, cy, r, lw, f, l0, gx, gy, gr = q[:9]
        ew = math.exp(lw)
        dx, dy = self.x - cx, self.y - cy
        rho = np.sqrt(dx * dx + dy * dy) + 1e-9
        ud = (rho - r) / ew
        td = np.tanh(ud)
        disc = 0.5 * (1.0 - td)
        shade = disc
        level = l0 + gx * self.px + gy * self.py + gr * self.pr
        if self.with_arm:
            theta, half = q[9], q[10]
            c, s = math.cos(theta), math.sin(theta)
            along, across = dx * c + dy * s, -dx * s + dy * c
            ua = (np.abs(across) - half) / ew
            ta = np.tanh(ua)
            band = 0.5 * (1.0 - ta)
            th = np.tanh(along / ew)
            start = 0.5 * (1.0 + th)
            arm = band * start
            on_arm = arm > disc
            shade = np.where(on_arm, arm, disc)
        m = f + (level - f) * (1.0 - shade)
        if not grad:
            return m
        amp = -(level - f)  # d m / d shade
        dd = -0.5 * (1.0 - td * td)  # d disc / d ud
        g = np.zeros((m.size, 11 if self.with_arm else 9))
        g[:, self.CX] = dd * (-dx / rho) / ew
        g[:, self.CY] = dd * (-dy / rho) / ew
        g[:, self.R] = dd * (-1.0 / ew)
        g[:, self.LOGW] = dd * (-ud)
        if self.with_arm:
            db = -0.5 * (1.0 - ta * ta)  # d band / d ua
            dst = 0.5 * (1.0 - th * th) / ew  # d start / d along
            sv = np.sign(across)
            arm_g = np.zeros_like(g)
            arm_g[:, self.CX] = db * sv * s / ew * start + band * dst * (-c)
            arm_g[:, self.CY] = db * sv * (-c) / ew * start + band * dst * (-s)
            arm_g[:, self.LOGW] = db * (-ua) * start + band * 0.5 * (1.0 - th * th) * (-along / ew)
            arm_g[:, self.THETA] = db * sv * (-along) / ew * start + band * dst * across
            arm_g[:, self.HALF] = db * (-1.0 / ew) * start
            g = np.where(on_arm[:, None], arm_g, g)
        g *= amp[:, None]
        open_ = 1.0 - shade
        g[:, self.FLOOR] = shade
        g[:, self.L0] = open_
        g[:, self.GX] = open_ * self.px
        g[:, self.GY] = open_ * self.py
        g[:, self.GR] = open_ * self.pr
        return m, g

    def nll(self, q):
        m, g = self.counts(q, grad=True)
        m = np.maximum(m, 1e-6)
        return float(np.sum(m - self.d * np.log(m))), (1.0 - self.d / m) @ g


def fit_beamstop_shadow(data, valid, center, radius, *, arm_angle=None, accept=None) -> dict | None:
    """Fit the beamstop's disc (and arm) to the counts round it by Poisson maximum likelihood.

    Parameters
    ----------
    data, valid : (h, w) ndarray
        A window of the frame (counts) round the shadow, and its measured
        pixels.
    center : (fast, slow)
        Start for the disc's centre, pixels (corner convention) in the
        window; two starts about a third of a radius away (diagonally) are
        tried too.
    radius : float
        Start radius, pixels.
    arm_angle : float, optional
        Start for the arm's direction (radians, ``atan2(slow, fast)``); by
        default :func:`arm_direction`.  Without an arm in sight only the
        disc is fitted.
    accept : callable, optional
        Called with the result before its uncertainty is worked out (the
        costly part); where it returns False the result comes back at once
        with ``center_sigma`` infinite.

    Returns
    -------
    dict or None
        ``center`` (fast, slow) and ``radius`` of the disc (pixels, window
        coordinates), ``center_sigma`` (1-σ per axis, pixels), ``arm_angle``
        (radians or None), ``arm_half_width``, ``edge_width``, ``floor`` and
        ``level`` (counts in the shadow and mean open counts near it),
        ``significance`` (likelihood-ratio z of the shadow against none),
        ``edge_chi2`` (Pearson χ² per pixel near the disc's edge),
        ``open_beyond`` (counts seen over open counts expected just beyond
        the rim opposite the arm: about 1 for a disc, small for a stretch of
        arm; NaN where not seen) and ``n_pixels``.  None when fewer than 50
        pixels (or bins) are measured.
    """
    from scipy.ndimage import binary_dilation
    from scipy.optimize import minimize

    if arm_angle is None:
        arm_angle = arm_direction(data, valid, center, radius)
    use = valid.copy()
    if use.sum() < 50:
        return None
    d_all = data.astype(np.float64)
    level0 = float(np.percentile(d_all[use], 75))
    # bright outliers (spots, zingers) and their neighbours leave the fit
    bright = (d_all > level0 + 6.0 * math.sqrt(max(level0, 0.0)) + 4.0) & use
    use &= ~binary_dilation(bright, iterations=2)
    # a large disc is fitted on nb x nb bins (every pixel of a bin measured):
    # its edge is still placed to a fraction of a pixel, at a fraction of the cost
    nb = max(1, int(radius // 8))
    h, w = (data.shape[0] // nb) * nb, (data.shape[1] // nb) * nb
    sums = np.where(use, d_all, 0.0)[:h, :w].reshape(h // nb, nb, w // nb, nb).sum(axis=(1, 3))
    full = use[:h, :w].reshape(h // nb, nb, w // nb, nb).all(axis=(1, 3))
    if full.sum() < 50:
        return None
    yy, xx = np.nonzero(full)
    x0, y0 = center
    mdl = _ShadowModel((xx + 0.5) * nb, (yy + 0.5) * nb, sums[full], x0, y0, max(h, w) / 2.0,
                       arm_angle is not None, area=nb * nb)
    level0 *= nb * nb
    # wide: the start (the deepest shadow seen) may be a cap of a disc whose
    # centre a gap hides
    reach = 3.0 * radius + 5.0
    bounds = [(x0 - reach, x0 + reach), (y0 - reach, y0 + reach),
              (0.4 * radius, reach), (math.log(0.2), math.log(max(0.3 * radius, 0.5))),
              (0.0, None), (1e-3, None), (None, None), (None, None), (None, None)]
    q0 = [0.0, 0.1 * level0, max(level0, 0.1), 0.0, 0.0, 0.0]
    if arm_angle is not None:
        bounds += [(arm_angle - 0.6, arm_angle + 0.6), (0.5, 1.2 * radius)]
        q0 += [arm_angle, 0.4 * radius]
    # a change of 0.01 in the log-likelihood is of no matter
    opts = {"maxiter": 300, "ftol": 0.01 / max(float(mdl.d.sum()), 1.0), "gtol": 1e-3}
    fits = []
    for a, b in ((0, 0), (0.7, 0.7), (-0.7, -0.7)):
        q = np.array([x0 + 0.5 * radius * a, y0 + 0.5 * radius * b, radius] + q0)
        fits.append(minimize(mdl.nll, q, jac=True, method="L-BFGS-B", bounds=bounds, options=opts))
    best = min(fits, key=lambda res: res.fun)
    q = best.x
    cx, cy, r, lw, f = (float(v) for v in q[:5])
    ew = math.exp(lw)
    m = np.maximum(mdl.counts(q), 1e-6)
    rho = np.hypot(mdl.x - cx, mdl.y - cy)
    near_open = (rho > r + 3 * ew) & (rho < 2 * r + 5)
    level = float(np.mean(m[near_open])) if near_open.any() else float(q[5])

    # no shadow at all: the open level alone
    def flat_nll(p):
        f_, g_ = mdl.nll(np.concatenate([q[:4], [p[0], p[0]], p[1:], q[9:]]))
        return f_, np.concatenate([[g_[4] + g_[5]], g_[6:9]])

    flat = minimize(flat_nll, [max(float(mdl.d.mean()), 1e-3), 0.0, 0.0, 0.0], jac=True, method="L-BFGS-B",
                    bounds=[(1e-3, None), (None, None), (None, None), (None, None)], options=opts)
    significance = math.sqrt(max(2.0 * (flat.fun - best.fun), 0.0))
    # beyond the rim opposite the arm the frame must be open: a disc fitted on
    # a stretch of arm has arm on both sides (NaN where that is not seen)
    open_beyond = float("nan")
    if arm_angle is not None:
        away = np.abs(np.angle(np.exp(1j * (np.arctan2(mdl.y - cy, mdl.x - cx) - q[9] - math.pi))))
        beyond = (away < math.radians(25.0)) & (rho > r + 2 * ew + 1) & (rho < 2 * r + 2 * ew + 6)
        if beyond.sum() * mdl.area >= 20:
            # the model's open counts there against those seen
            open_level = q[5] + q[6] * mdl.px[beyond] + q[7] * mdl.py[beyond] + q[8] * mdl.pr[beyond]
            open_beyond = float(np.sum(mdl.d[beyond]) / max(float(np.sum(open_level)), 1e-9))
    edge = np.abs(rho - r) < 2.0 * ew + 1.5
    edge_chi2 = float(np.mean((mdl.d[edge] - m[edge]) ** 2 / m[edge])) if edge.sum() >= 10 else float("inf")
    out = {
        "center": (cx, cy), "radius": r, "center_sigma": float("inf"),
        "arm_angle": float(q[9]) if arm_angle is not None else None,
        "arm_half_width": float(q[10]) if arm_angle is not None else None,
        "edge_width": ew, "floor": f / mdl.area, "level": level / mdl.area, "significance": significance,
        "edge_chi2": edge_chi2, "n_pixels": int(mdl.d.size), "open_beyond": open_beyond,
    }
    if accept is not None and not accept(out):
        return out  # not a disc: its uncertainty is not worth the work
    # other optima nearly as likely, and the likelihood's fall a radius away
    # (or an arm's width; 2.5 times that along and across the arm) with the
    # rest refitted: flat along a gap that hides the disc
    alike = np.asarray([res.x[:2] for res in fits if res.fun - best.fun < 2.0])
    sigma = float(np.max(np.hypot(*(alike - q[:2]).T)))
    step = max(float(q[2]), float(q[10]) if arm_angle is not None else 0.0)
    axis = float(q[9]) if arm_angle is not None else 0.0
    moves = [(step, t) for t in np.radians(np.arange(0.0, 360.0, 45.0))]
    # further along and across the arm: a disc hidden in a gap slides along it
    moves += [(2.5 * step, axis + k * math.pi / 2) for k in range(4)]
    for dist, t in moves:
        fixed = np.array([q[0] + dist * math.cos(t), q[1] + dist * math.sin(t)])

        def rest(p, fixed=fixed):
            f_, g_ = mdl.nll(np.concatenate([fixed, p]))
            return f_, g_[2:]

        res = minimize(rest, q[2:], jac=True, method="L-BFGS-B", bounds=bounds[2:], options=opts)
        sigma = max(sigma, dist / math.sqrt(2.0 * max(res.fun - best.fun, 1e-6)))
    m, g = mdl.counts(q, grad=True)
    m = np.maximum(m, 1e-6)
    try:
        cov = np.linalg.inv((g / m[:, None]).T @ g)
        sigma = max(sigma, math.sqrt(max(0.5 * (cov[0, 0] + cov[1, 1]), 0.0)))
    except np.linalg.LinAlgError:
        sigma = float("inf")
    out["center_sigma"] = sigma
    return out
