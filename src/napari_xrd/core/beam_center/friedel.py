"""Beam centre from the centrosymmetry of the diffraction pattern.

Friedel's law makes a diffraction pattern (nearly) symmetric under the point
reflection through the beam centre: rings, diffuse scatter and the
low-resolution Bragg spots reappear at ``2c - x``.  The centre is found by
maximising the masked, normalised correlation of the image with its point
reflection.  For an image ``P`` (zero where invalid) and validity ``M``,

    score(s) = Σ_x P(x) P(s - x) / Σ_x P(x)² M(s - x)

is a convolution, computed for every ``s`` at once with FFTs; its maximum is
at ``s = 2c``.  Coarse-to-fine: the whole (binned) image first, then a crop
about the coarse centre at full resolution, each refined to sub-pixel by a
quadratic fit to the score peak.

On a tilted detector the projected pattern is not exactly centrosymmetric;
the symmetry centre of a ring lies ``≈ D tan²(2θ) tan(τ)`` from the beam
centre, so this estimator is used for the centre only and the ring fit
(:mod:`.rings`) supplies tilt and the final centre where rings exist.
"""

from __future__ import annotations

import math

import numpy as np

from napari_xrd.core.beam_center._common import block_mean, check_image
from napari_xrd.core.geometry import DetectorGeometry

__all__ = ["centrosymmetry_center", "symmetry_score_map", "find_peaks_2d", "friedel_pair_geometry"]


#: vote peaks tried by :func:`friedel_pair_geometry`
VOTE_PEAKS = 3


def _highpass(data: np.ndarray, valid: np.ndarray, sigma: float, smooth: float = 0.0) -> np.ndarray:
    """Band-passed log image: minus its masked Gaussian blur ``sigma``, lightly
    smoothed by ``smooth``; 0 where invalid, tails compressed."""
    from scipy.ndimage import gaussian_filter

    x = np.where(valid, np.log1p(np.clip(data, 0, None)), 0.0).astype(np.float32)
    w = valid.astype(np.float32)

    def masked_blur(a, s):
        num = gaussian_filter(a, s, mode="constant", truncate=2.5)
        den = gaussian_filter(w, s, mode="constant", truncate=2.5)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)

    hi = masked_blur(x, smooth) if smooth > 0 else x
    p = np.where(valid, hi - masked_blur(x, sigma), 0.0)
    # a blur near the image border is biased by the background's slope:
    # taper the border (width 2 sigma) so it cannot look symmetric
    h, w = p.shape
    taper = min(2 * sigma, 0.08 * max(h, w))
    ramp_r = np.clip(np.minimum(np.arange(h), np.arange(h)[::-1]) / taper, 0, 1)
    ramp_c = np.clip(np.minimum(np.arange(w), np.arange(w)[::-1]) / taper, 0, 1)
    p = p * ramp_r[:, None] * ramp_c[None, :]
    # compress the brightest tails (hot pixels, saturated spots), unit RMS
    if not valid.any():
        return p.astype(np.float32)
    scale = np.percentile(np.abs(p[valid]), 99.9)
    p = np.clip(p, -scale, scale)
    return (p / (np.sqrt(np.mean(p[valid] ** 2)) + 1e-12)).astype(np.float32)


def _shadow(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Beamstop shadow, its arm and other dark regions: far below the local level.

    Worked out on a ~420-pixel binned image (level: masked Gaussian blur;
    dark: below 20% of it; grown by one bin to cover the edges) and expanded
    back, so it costs little on a 16M frame.
    """
    from scipy.ndimage import binary_dilation, gaussian_filter, uniform_filter

    h, w = data.shape
    f = max(1, int(max(h, w) // 420))
    small, ok = block_mean(data, valid=valid, factor=f)
    # the level must not follow bright Bragg spots: on a dim frame (a photon
    # per pixel or less) one strong spot raises the blurred level round it
    # several-fold, and every block nearby then looks "dark" (15 % of a
    # development frame was masked as shadow, half its spots with it).  Blocks
    # far above the level are left out of it, up to three times, so that
    # bright powder rings (spotty ice) go too: the empty valleys between them
    # looked dark (7 % of a frame).
    keep = ok
    for i in range(4):
        num = gaussian_filter(np.where(keep, small, 0), 7.0, mode="nearest", truncate=2.0)
        den = gaussian_filter(keep.astype(np.float32), 7.0, mode="nearest", truncate=2.0)
        first = num / np.maximum(den, 0.05)
        bright = ok & (small > 2.0 * first + 3.0 * np.sqrt(np.maximum(first, 0) / (f * f)) + 1.0 / (f * f))
        if i == 3 or not (bright & keep).any():
            break
        keep = keep & ~bright
    level = np.where(den > 0.05, num / np.maximum(den, 0.05), np.inf)
    # a block is dark when it is far below its surroundings, measured above a
    # pedestal (CCDs read one where no photons arrive), and that cannot be
    # Poisson noise: the surroundings hold at least ~10 counts per block, and
    # the 3 x 3 blocks round it lack 4 σ of their expected counts (with the
    # pedestal allowance alone, a lone block of 36 pixels at 1 photon per
    # pixel passed as dark one time in 150)
    base = float(min(np.percentile(small[ok], 0.5), 0.5 * np.median(small[ok]))) if ok.any() else 0.0
    finite = ok & np.isfinite(level)
    expected = uniform_filter(np.where(finite, level, 0.0) * (f * f), 3, mode="constant")
    deficit = uniform_filter(np.where(finite, level - small, 0.0) * (f * f), 3, mode="constant")
    dark = (ok & (small - base < 0.2 * (level - base)) & ((level - base) * f * f >= 10.0)
            & (deficit * 3.0 > 4.0 * np.sqrt(np.maximum(expected, 0.0))))
    dark = binary_dilation(dark, iterations=1)
    if dark.sum() > 0.3 * max(1, ok.sum()):  # not a shadow: a dim image
        dark[:] = False
    rows = np.minimum(np.arange(h) // f, dark.shape[0] - 1)
    cols = np.minimum(np.arange(w) // f, dark.shape[1] - 1)
    return dark[rows[:, None], cols[None, :]]


def symmetry_score_map(p: np.ndarray, valid: np.ndarray, *, min_overlap: float = 0.2) -> np.ndarray:
    """Normalised point-reflection correlation for every ``s = 2c``.

    Parameters
    ----------
    p : (h, w) float ndarray
        Zero-mean-ish image, 0 where invalid.
    valid : (h, w) bool ndarray

    Returns
    -------
    score : (2h - 1, 2w - 1) float ndarray
        ``score[i, j]`` for centre (array index) ``(i / 2, j / 2)``; NaN where
        the image and its reflection overlap in less than ``min_overlap`` of
        the valid pixels.
    """
    from scipy.fft import irfft2, next_fast_len, rfft2

    h, w = p.shape
    shape = (next_fast_len(2 * h - 1, real=True), next_fast_len(2 * w - 1, real=True))
    m = valid.astype(np.float32)
    fp = rfft2(p, shape)
    fm = rfft2(m, shape)
    fp2 = rfft2(p * p, shape)
    num = irfft2(fp * fp, shape)[: 2 * h - 1, : 2 * w - 1]
    den = irfft2(fp2 * fm, shape)[: 2 * h - 1, : 2 * w - 1]
    overlap = irfft2(fm * fm, shape)[: 2 * h - 1, : 2 * w - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        # small overlaps give noisy correlations: weight by sqrt(overlap fraction)
        score = num / den * np.sqrt(np.clip(overlap / m.sum(), 0, 1))
    score[(overlap < min_overlap * m.sum()) | (den <= 0)] = np.nan
    return score


def _peak(score: np.ndarray, near=None, radius=None) -> tuple[float, float, float]:
    """Sub-pixel maximum (row, col, value) of a score map by a 3x3 quadratic fit."""
    s = np.where(np.isfinite(score), score, -np.inf)
    if near is not None:
        rr, cc = np.ogrid[: s.shape[0], : s.shape[1]]
        s = np.where((rr - near[0]) ** 2 + (cc - near[1]) ** 2 <= radius**2, s, -np.inf)
    i, j = np.unravel_index(np.argmax(s), s.shape)
    val = float(s[i, j])
    di = dj = 0.0
    if 0 < i < s.shape[0] - 1 and 0 < j < s.shape[1] - 1:
        blk = s[i - 1 : i + 2, j - 1 : j + 2]
        if np.all(np.isfinite(blk)):
            # least-squares quadratic surface on the 3x3 block
            y, x = np.mgrid[-1:2, -1:2]
            a = np.stack([np.ones(9), x.ravel(), y.ravel(), x.ravel() ** 2, y.ravel() ** 2, (x * y).ravel()], 1)
            c = np.linalg.lstsq(a, blk.ravel(), rcond=None)[0]
            hess = np.array([[2 * c[4], c[5]], [c[5], 2 * c[3]]])
            grad = np.array([c[2], c[1]])
            if np.all(np.linalg.eigvalsh(hess) < 0):
                d = -np.linalg.solve(hess, grad)
                if np.all(np.abs(d) <= 1.0):
                    di, dj = float(d[0]), float(d[1])
    return i + di, j + dj, val


def centrosymmetry_center(
    image: np.ndarray,
    *,
    pixel_mask: np.ndarray | None = None,
    start: tuple[float, float] | None = None,
    coarse_size: int = 384,
    fine_half_width: int = 256,
    search_radius_px: float | None = None,
    remove_shadow: bool = True,
) -> tuple[tuple[float, float], dict]:
    """Beam centre as the centre of point symmetry of the image.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        One frame (counts); negative values are treated as masked.
    pixel_mask : (n_slow, n_fast) array_like, optional
        Non-zero where a pixel is not a measurement.
    start : (float, float), optional
        ``(fast, slow)`` guess; with ``search_radius_px`` it limits the coarse
        search.  Without it the whole image is searched.
    coarse_size : int
        Long side of the binned image for the coarse search.
    fine_half_width : int
        Half size in full-resolution pixels of the crop for the fine search.
    search_radius_px : float, optional
        Coarse search radius about ``start`` in full-resolution pixels.
    remove_shadow : bool
        Leave out the beamstop shadow and its arm (found as dark regions).

    Returns
    -------
    beam_center : (float, float)
        ``(fast, slow)`` in pixels, corner convention.
    details : dict
        ``score`` (normalised correlation at the optimum, 1 = perfectly
        symmetric), ``coarse`` centre, ``sharpness`` (peak curvature) and
        ``uncertainty_px`` (half-width of the score peak over its contrast).
    """
    data, valid = check_image(image, pixel_mask)
    n_slow, n_fast = data.shape
    if remove_shadow:
        valid = valid & ~_shadow(data, valid)
    # ---- coarse: whole binned image
    f = max(1, int(np.ceil(max(n_slow, n_fast) / coarse_size)))
    small, ok = block_mean(data, valid=valid, factor=f)
    # spot-scale, ring-scale and diffuse-background-scale detail, each scored
    p = (
        _highpass(small, ok, sigma=2.0)
        + _highpass(small, ok, sigma=12.0, smooth=1.0)
        + 0.5 * _highpass(small, ok, sigma=max(small.shape) / 4, smooth=3.0)
    )
    score = symmetry_score_map(p, ok)
    near = rad = None
    if start is not None and search_radius_px is not None:
        near = (2 * (start[1] / f - 0.5), 2 * (start[0] / f - 0.5))
        rad = 2 * search_radius_px / f
    i, j, coarse_val = _peak(score, near, rad)
    # how far the peak stands out of the score map (robust z-score)
    fin = score[np.isfinite(score)]
    if fin.size:
        med = float(np.median(fin))
        z = float((coarse_val - med) / (1.4826 * np.median(np.abs(fin - med)) + 1e-12))
    else:
        z = 0.0  # a blank frame: no symmetry to speak of
    coarse = ((j / 2 + 0.5) * f, (i / 2 + 0.5) * f)  # binned index -> full corner coords
    # ---- fine: full-resolution crop centred on the coarse centre
    hw = int(min(fine_half_width, max(n_slow, n_fast) // 2))
    c_col = int(round(coarse[0] - 0.5))
    c_row = int(round(coarse[1] - 0.5))
    r0, r1 = max(0, c_row - hw), min(n_slow, c_row + hw + 1)
    q0, q1 = max(0, c_col - hw), min(n_fast, c_col + hw + 1)
    crop, cvalid = data[r0:r1, q0:q1], valid[r0:r1, q0:q1]
    result = coarse
    sharp = float("nan")
    fine_val = coarse_val
    if cvalid.sum() > 1000:
        pf = _highpass(crop, cvalid, sigma=6.0, smooth=0.7)
        fs = symmetry_score_map(pf, cvalid, min_overlap=0.1)
        near_f = (2 * (c_row - r0), 2 * (c_col - q0))
        fi, fj, fine_val = _peak(fs, near_f, 1.5 * f + 2)
        if np.isfinite(fine_val):
            result = (q0 + fj / 2 + 0.5, r0 + fi / 2 + 0.5)
            ii, jj = int(round(fi)), int(round(fj))
            blk = fs[max(ii - 6, 0) : ii + 7, max(jj - 6, 0) : jj + 7]
            base = np.nanmedian(blk)
            sharp = float(fine_val - base)
            if not sharp > 0.015:  # no clear symmetric detail at full resolution
                result = coarse
    # peak width in s is ~ the feature size; in c it is half that
    unc = 0.5 if np.isfinite(sharp) and sharp > 0.05 else 2.0 * f
    details = {
        "coarse": [float(coarse[0]), float(coarse[1])],
        "score": float(fine_val),
        "coarse_score": float(coarse_val),
        "coarse_z": z,
        "sharpness": sharp,
        "uncertainty_px": float(unc),
        "bin_factor": f,
    }
    return (float(result[0]), float(result[1])), details


def find_peaks_2d(data: np.ndarray, valid: np.ndarray, *, max_peaks: int = 600, k_sigma: float = 6.0) -> np.ndarray:
    """Bright compact maxima (Bragg-spot candidates), intensity-weighted centroids.

    Works on a ~800-pixel binned copy for speed (centroids from its 3×3
    neighbourhoods), which is precise enough to pair spots.

    Returns
    -------
    peaks : (n, 2) ndarray
        ``(fast, slow)`` corner convention, brightest first.
    """
    from scipy.ndimage import maximum_filter, uniform_filter

    f = max(1, int(max(data.shape) // 800))
    small, ok = block_mean(data, valid=valid, factor=f)
    x = np.where(ok, small, 0.0).astype(np.float32)
    w = ok.astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        local = uniform_filter(x, 9) / np.maximum(uniform_filter(w, 9), 1e-3)
    resid = np.where(ok, x - local, 0.0)
    mad = 1.4826 * float(np.median(np.abs(resid[ok]))) + 1e-6
    # not next to gaps or masked pixels: module edges are periodic, so their
    # artefacts would pair up about any point of the module grid
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(ok, np.ones((5, 5), bool), border_value=0)
    cand = (resid > k_sigma * mad) & (resid == maximum_filter(resid, 5)) & inner
    rr, cc = np.nonzero(cand)
    if len(rr) == 0:
        return np.empty((0, 2))
    order = np.argsort(resid[rr, cc])[::-1][:max_peaks]
    rr, cc = rr[order], cc[order]
    # 3x3 centroid of the background-subtracted binned image, vectorised
    pad = np.pad(np.clip(resid, 0, None), 1)
    dy, dx = np.mgrid[-1:2, -1:2]
    w = pad[rr[:, None, None] + 1 + dy, cc[:, None, None] + 1 + dx]
    tot = w.sum(axis=(1, 2)) + 1e-12
    fy = rr + (w * dy).sum(axis=(1, 2)) / tot
    fx = cc + (w * dx).sum(axis=(1, 2)) / tot
    return np.stack([(fx + 0.5) * f, (fy + 0.5) * f], axis=1)


def _mirror_positions(geometry: DetectorGeometry, spots: np.ndarray) -> np.ndarray:
    """Where the Friedel mate of each spot would lie: its ray turned by 180° about the beam."""
    k = geometry.lab_coordinates(spots[:, 0], spots[:, 1]).reshape(-1, 3)
    k = k * np.array([-1.0, -1.0, 1.0])
    return geometry.project(k)


def _pair_up(geometry: DetectorGeometry, spots: np.ndarray, tolerance_px: float, use=None):
    """Mutual nearest mates within ``tolerance_px``: index arrays ``(i, j)``, ``i < j``."""
    from scipy.spatial import cKDTree

    idx = np.arange(len(spots)) if use is None else np.flatnonzero(use)
    if len(idx) < 2:
        return np.empty(0, int), np.empty(0, int)
    p = spots[idx]
    mirrored = _mirror_positions(geometry, p)
    fin = np.all(np.isfinite(mirrored), axis=1)
    tree = cKDTree(p)
    d, j = tree.query(np.where(fin[:, None], mirrored, 1e12), distance_upper_bound=tolerance_px)
    i = np.flatnonzero(np.isfinite(d) & (j < len(p)))
    i = i[(j[i] != i)]
    mutual = j[j[i]] == i if len(i) else np.zeros(0, bool)
    i = i[mutual]
    i = i[i < j[i]]
    return idx[i], idx[j[i]]


def friedel_pair_geometry(
    spots,
    geometry: DetectorGeometry,
    *,
    search_radius_px: float = 30.0,
    fit_tilt: bool = True,
    min_pairs: int = 8,
    max_iter: int = 15,
):
    """Beam centre and tilt from Friedel pairs of spots, tilt included.

    A reflection ``h`` and its mate ``-h`` diffract at the same 2θ and at
    azimuths 180° apart about the beam: their rays are mirror images under
    ``(x, y, z) → (-x, -y, z)``.  On a tilted detector the two spots are not
    symmetric about the beam centre in the detector plane (their midpoint is
    ``≈ D tan²2θ tan τ`` away); this fit predicts each spot's mate through
    the full geometry.

    1. The centre within ``search_radius_px`` of the start where the
       midpoints of low-angle spot pairs cluster (a vote; low-angle pairs are
       the least sensitive to tilt); where its pairing fails, the next
       highest clusters (``VOTE_PEAKS`` in all).
    2. Mutual nearest mates, then Levenberg-Marquardt on beam centre (and
       pitch, yaw) over the distances between each spot and its partner's
       predicted mate; pairs left far out are dropped, the pairing is redone
       with the refined geometry until it no longer changes.

    Parameters
    ----------
    spots : (n, 2) ndarray
        ``(fast, slow)`` centroids, corner convention.
    geometry : DetectorGeometry
        Start: distance, wavelength; beam centre within ``search_radius_px``.
    search_radius_px : float
    fit_tilt : bool
    min_pairs : int

    Returns
    -------
    dict or None
        ``geometry``, ``center_sigma_px``, ``tilt_sigma_deg``, ``rms_px``,
        ``n_pairs``, ``n_spots``; None when fewer than ``min_pairs`` pairs
        are found.
    """
    from scipy.ndimage import gaussian_filter

    p = np.asarray(spots, float).reshape(-1, 2)
    n = len(p)
    if n < 2 * min_pairs:
        return None
    c0 = np.array(geometry.beam_center)
    # 1. vote with the midpoints of low-angle pairs
    rad = np.hypot(*(p - c0).T)
    inner = np.flatnonzero(rad <= max(np.quantile(rad, 0.5), np.sort(rad)[min(n - 1, 40)]))[:800]
    q = p[inner]
    ii, jj = np.triu_indices(len(q), 1)
    mid = 0.5 * (q[ii] + q[jj]) - c0
    near = np.all(np.abs(mid) < search_radius_px, axis=1)
    if near.sum() < min_pairs:
        return None
    nb = int(2 * search_radius_px) + 1
    hist, xe, ye = np.histogram2d(mid[near, 0], mid[near, 1], bins=nb, range=[[-search_radius_px, search_radius_px]] * 2)
    hist = gaussian_filter(hist, 1.0)
    # the highest peak of the vote, else the next ones in turn (a chance
    # cluster of midpoints can top the true one when the true one falls
    # across two bins; its pairing then fails)
    for _ in range(VOTE_PEAKS):
        bx, by = np.unravel_index(np.argmax(hist), hist.shape)
        if hist[bx, by] <= 0:
            break
        hist[max(0, bx - 3): bx + 4, max(0, by - 3): by + 4] = 0
        g = geometry.replace(beam_center=(c0[0] + 0.5 * (xe[bx] + xe[bx + 1]), c0[1] + 0.5 * (ye[by] + ye[by + 1])))
        fit = _pair_and_refine(g, p, q, inner, fit_tilt=fit_tilt, min_pairs=min_pairs, max_iter=max_iter)
        if fit is not None:
            return fit
    return None


def _pair_and_refine(g, p, q, inner, *, fit_tilt, min_pairs, max_iter):
    """Pair the spots about the start ``g`` and refine centre (and tilt); the result dict or None."""
    from napari_xrd.core.beam_center._common import levenberg_marquardt

    n = len(p)
    # 2. pair and refine
    n_geo = 4 if fit_tilt else 2
    unit = np.array([0.25, 0.25, 0.02, 0.02])[:n_geo]
    # an unknown tilt τ moves a mate by up to D tan²2θ tan τ: allow for 3° on the low-angle spots first
    tt_in = float(np.max(g.two_theta_at(q[:, 0], q[:, 1])))
    tol = 4.0 + g.distance * math.tan(tt_in) ** 2 * math.tan(math.radians(3.0)) / g.pixel_size
    use = np.zeros(n, bool)
    use[inner] = True
    state = None
    for _ in range(6):
        i, j = _pair_up(g, p, tol, use)
        if len(i) < min_pairs:
            return None
        keep = np.ones(len(i), bool)
        for _ in range(3):
            base = np.array([*g.beam_center, g.pitch, g.yaw])[:n_geo]
            ik, jk = i[keep], j[keep]

            def fun(x, base=base, ik=ik, jk=jk):
                b = base + x * unit
                gg = g.replace(beam_center=(b[0], b[1]), **({"pitch": b[2], "yaw": b[3]} if fit_tilt else {}))
                r = np.concatenate([_mirror_positions(gg, p[ik]) - p[jk], _mirror_positions(gg, p[jk]) - p[ik]])
                return np.where(np.isfinite(r), r, 1e3).ravel()

            x, jac = levenberg_marquardt(fun, n_geo, max_iter=max_iter, tol=1e-3, h=0.2)
            res = fun(x).reshape(2, -1, 2)
            d = np.hypot(res[..., 0], res[..., 1]).max(axis=0)
            sigma = max(float(np.median(d)) / 1.1774, 0.05)
            far = d > 3.5 * sigma
            b = base + x * unit
            g_new = g.replace(beam_center=(b[0], b[1]), **({"pitch": b[2], "yaw": b[3]} if fit_tilt else {}))
            if not far.any() or keep.sum() - far.sum() < min_pairs:
                break
            kk = np.flatnonzero(keep)
            keep[kk[far]] = False
        g = g_new
        rr = fun(x)
        dof = max(rr.size - n_geo, 1)
        s2 = float(rr @ rr) / dof
        cov = (np.linalg.pinv(jac.T @ jac) * s2) * np.outer(unit, unit) if jac is not None else np.full((n_geo,) * 2, np.inf)
        pairs = (i[keep], j[keep])
        done = state is not None and len(state[0]) == len(pairs[0]) and np.array_equal(state[0], pairs[0])
        state = pairs
        rms = float(np.sqrt(np.mean(rr**2) * 2))
        if done:
            break
        # all spots, tolerance from the fit's scatter
        use = np.ones(n, bool)
        tol = max(3.5 * sigma, 1.0)
    return {
        "geometry": g,
        "center_sigma_px": float(math.sqrt(max(cov[0, 0], 0) + max(cov[1, 1], 0))),
        "tilt_sigma_deg": float(math.sqrt(max(cov[2, 2], cov[3, 3], 0))) if fit_tilt else float("nan"),
        "rms_px": rms,
        "n_pairs": int(len(state[0])),
        "n_spots": int(n),
    }
