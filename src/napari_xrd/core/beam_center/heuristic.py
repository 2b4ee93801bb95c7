"""The classical beam-centre heuristic of Czyzewski et al. (seed 004, section 2.4).

Kept as the baseline the precise estimators are measured against.  Steps, as
the paper describes them:

1. The frame becomes an 8-bit grey image ``X`` of about 512 pixels a side
   (nearest-neighbour resize, values clipped at the 95th percentile and scaled
   to 0-255).  The paper's images show the beam-stop shadow *white*, i.e. the
   usual inverted display, so high counts become dark: ``X = 255 - scaled``.
2. ``X_t = round(255 * log_255(X))`` damps outliers.
3. Centres of mass ``O_o`` of ``X`` and ``O_t`` of ``X_t``; a line of length
   ``k * |O_o O_t|`` (``k = 4``) through both, centred on ``O_o``, is
   rasterised with Bresenham's algorithm: every point is a candidate centre.
4. For each candidate, ``n_r = 256`` rays of length equal to its distance to
   the nearest image edge; ``b_j`` is the mean grey value along ray ``j``;
   ``d`` is the mean in the radius-``ρ`` (``ρ = 1``) neighbourhood minus the
   image mean.  Fitness ``f = max_j(b_j) * d``; the fittest candidate wins.

References
----------
Czyzewski, Krawiec, Brzezinski & Porebski (2021), "Detecting anomalies in
X-ray diffraction images using convolutional neural networks", Expert
Systems with Applications 174, 114740.
"""

from __future__ import annotations

import numpy as np

from napari_xrd.core.beam_center._common import check_image

__all__ = ["heuristic_beam_center", "bresenham_line"]


def bresenham_line(r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
    """Integer points of the segment from ``(r0, c0)`` to ``(r1, c1)``, shape (n, 2)."""
    points = []
    dr, dc = abs(r1 - r0), abs(c1 - c0)
    sr = 1 if r1 >= r0 else -1
    sc = 1 if c1 >= c0 else -1
    err = dc - dr
    r, c = r0, c0
    while True:
        points.append((r, c))
        if r == r1 and c == c1:
            break
        e2 = 2 * err
        if e2 > -dr:
            err -= dr
            c += sc
        if e2 < dc:
            err += dc
            r += sr
    return np.array(points, dtype=int)


def _to_grey(data: np.ndarray, valid: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    n_slow, n_fast = data.shape
    scale = max(n_slow, n_fast) / size
    rows = np.minimum((np.arange(int(round(n_slow / scale))) * scale + scale / 2).astype(int), n_slow - 1)
    cols = np.minimum((np.arange(int(round(n_fast / scale))) * scale + scale / 2).astype(int), n_fast - 1)
    small = data[np.ix_(rows, cols)].astype(np.float64)
    ok = valid[np.ix_(rows, cols)]
    small = np.where(ok, small, 0.0)  # the paper removes gap NaNs: they read as 0
    hi = np.percentile(small, 95) if small.max() > 0 else 1.0
    grey = np.rint(255 * np.clip(small, 0, hi) / max(hi, 1e-12))
    return 255.0 - grey, scale


def heuristic_beam_center(
    image: np.ndarray,
    *,
    pixel_mask: np.ndarray | None = None,
    size: int = 512,
    k: float = 4.0,
    n_rays: int = 256,
    rho: int = 1,
    max_candidates: int = 2000,
) -> tuple[tuple[float, float], dict]:
    """Beam centre by the seed-004 heuristic.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        One frame (counts).
    pixel_mask : (n_slow, n_fast) uint32 array_like, optional
        Non-zero where a pixel is not a measurement.
    size : int
        Long side of the grey image the heuristic works on (512 in the paper).
    k : float
        Candidate line length as a multiple of ``|O_o O_t|``.
    n_rays : int
        Rays per candidate.
    rho : int
        Radius of the neighbourhood whose brightness enters the fitness.
    max_candidates : int
        Evaluate at most this many (evenly spaced) line points.

    Returns
    -------
    beam_center : (float, float)
        ``(fast, slow)`` in full-resolution pixels, corner convention.
    details : dict
        ``centre_of_mass``, ``centre_of_mass_log`` and ``n_candidates``.
    """
    data, valid = check_image(image, pixel_mask)
    grey, scale = _to_grey(data, valid, size)
    h, w = grey.shape
    log_grey = np.rint(255.0 * np.log(np.maximum(grey, 1.0)) / np.log(255.0))
    rr, cc = np.mgrid[0:h, 0:w]

    def com(a):
        t = a.sum()
        if t <= 0:
            return (h - 1) / 2.0, (w - 1) / 2.0
        return float((a * rr).sum() / t), float((a * cc).sum() / t)

    o_o = com(grey)
    o_t = com(log_grey)
    dr, dc = o_t[0] - o_o[0], o_t[1] - o_o[1]
    half = k / 2.0
    a = (int(round(o_o[0] - half * dr)), int(round(o_o[1] - half * dc)))
    b = (int(round(o_o[0] + half * dr)), int(round(o_o[1] + half * dc)))
    cand = bresenham_line(a[0], a[1], b[0], b[1])
    cand = cand[(cand[:, 0] > 0) & (cand[:, 0] < h - 1) & (cand[:, 1] > 0) & (cand[:, 1] < w - 1)]
    if len(cand) == 0:
        cand = np.array([[int(round(o_o[0])), int(round(o_o[1]))]])
    if len(cand) > max_candidates:
        cand = cand[np.linspace(0, len(cand) - 1, max_candidates).astype(int)]
    mean_all = grey.mean()
    angles = np.arange(n_rays) * 2 * np.pi / n_rays
    best, best_f = cand[0], -np.inf
    for r, c in cand:
        r_min = min(r, c, h - 1 - r, w - 1 - c)
        if r_min < 1:
            continue
        t = np.arange(1, r_min + 1)
        ray_r = np.rint(r + np.sin(angles)[:, None] * t[None, :]).astype(int)
        ray_c = np.rint(c + np.cos(angles)[:, None] * t[None, :]).astype(int)
        b_j = grey[ray_r, ray_c].mean(axis=1)
        nb = grey[max(r - rho, 0) : r + rho + 1, max(c - rho, 0) : c + rho + 1]
        d = nb.mean() - mean_all
        f = b_j.max() * d
        if f > best_f:
            best, best_f = (r, c), f
    # grey-image pixel centre -> full-resolution corner convention
    fast = (best[1] + 0.5) * scale
    slow = (best[0] + 0.5) * scale
    details = {
        "centre_of_mass": [(o_o[1] + 0.5) * scale, (o_o[0] + 0.5) * scale],
        "centre_of_mass_log": [(o_t[1] + 0.5) * scale, (o_t[0] + 0.5) * scale],
        "n_candidates": int(len(cand)),
    }
    return (float(fast), float(slow)), details
