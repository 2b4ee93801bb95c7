"""Spots a finder missed where the still's own lattice predicts them.

A still's spots index (:func:`~napari_xrd.core.spots.lattice_check.frame_lattice`):
their reciprocal lattice then predicts where every other reflection near the
Ewald sphere lands (the stills model,
:meth:`~napari_xrd.core.geometry.DetectorGeometry.still_spot_positions`).
At a predicted position the question is no longer "is there a spot
anywhere?" (hundreds of thousands of places, each a chance for noise) but
"is there one here?", so a weaker spot can be believed; and on a spotty ice
ring, where Bragg spots and ice grains look alike, a spot at a lattice
position is very likely the crystal's.

Each prediction is tested by aperture photometry
(:func:`aperture_significance`): the counts in a disc about it against the
background of the pixels around it at the same distance from the beam, so
that a powder ring's profile is followed and its sparse grains do not raise
it; and the centroid of the counts above background must lie near the
prediction (the reference spots lie a fraction of a pixel from theirs; a
grain or a neighbour's tail that happens to reach the disc lies off
centre).  How often the test passes by chance is measured on the frame
itself: at the same predictions turned about the beam by random angles
(same resolution, same rings, same grains, no lattice); how many of the
predictions that pass may have passed by chance follows from that rate and
from how many failed (:func:`expected_chance_passes`).  Of a few
significance thresholds and centroid tolerances, the rule kept is the one
that adds most spots beyond the expected chance passes while those stay
below ``max_false_fraction`` of the spots it adds; near the ice lines and
away from them apart, as their chance rates differ.  Where no rule
qualifies nothing is added.

Predictions lie within ``max_excitation`` of the sphere, measured on the
reference spots themselves (the excitation errors of the lattice points
they index, relative to ``|r|``).  A frame that does not index (too few
spots, a rotation frame far from the still's Ewald sphere, a beam centre
far off) gives no lattice, or one that fails its checks, and nothing is
added.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from napari_xrd.core.spots.coarse import ICE_GRAIN_MARGIN

__all__ = ["predict_still_spots", "aperture_significance", "lattice_spot_search", "LatticeSearch",
           "excitation_error", "expected_chance_passes", "poisson_z"]


def excitation_error(r, wavelength: float) -> np.ndarray:
    """``|r + ŝ0/λ| - 1/λ`` (Å⁻¹) of reciprocal-lattice points ``r`` (n, 3): 0 on the Ewald sphere."""
    r = np.asarray(r, float).reshape(-1, 3)
    k = 1.0 / wavelength
    return np.sqrt(r[:, 0] ** 2 + r[:, 1] ** 2 + (r[:, 2] + k) ** 2) - k


def predict_still_spots(lattice, geometry, *, max_excitation: float, d_min: float, d_max: float = np.inf):
    """Detector positions of the lattice points near the Ewald sphere.

    Parameters
    ----------
    lattice : FrameLattice
        From :func:`~napari_xrd.core.spots.lattice_check.frame_lattice`.
    geometry : DetectorGeometry
    max_excitation : float
        Largest ``|ε| / |r|`` (dimensionless) of a predicted point, ``ε``
        its excitation error (:func:`excitation_error`).
    d_min, d_max : float
        Resolution range, Å.

    Returns
    -------
    fast_slow : (m, 2) ndarray
        Corner-convention positions on the detector (inside its bounds).
    hkl : (m, 3) int ndarray
    """
    from napari_xrd.core.geometry import lattice_points_near_sphere

    r_max = 1.0 / d_min
    hkl, r = lattice_points_near_sphere(np.linalg.inv(lattice.basis), geometry.wavelength, r_max=r_max,
                                        half_width=max_excitation * r_max, offset=lattice.phase)
    r_len = np.linalg.norm(r, axis=1)
    keep = (r_len >= 1.0 / d_max) & (np.abs(excitation_error(r, geometry.wavelength)) <= max_excitation * r_len)
    hkl, r = hkl[keep], r[keep]
    xy = geometry.still_spot_positions(r)
    n_slow, n_fast = geometry.shape
    inside = np.all(np.isfinite(xy), axis=1) & (xy[:, 0] >= 0) & (xy[:, 0] < n_fast) & (xy[:, 1] >= 0) & (
        xy[:, 1] < n_slow)
    return xy[inside], hkl[inside]


def _window_index(rows, cols, half: int, shape):
    """Flat indices of the squares of side ``2 half + 1`` about (rows, cols): (m, side, side); edges repeated."""
    n_slow, n_fast = shape
    k = np.arange(-half, half + 1)
    r = np.clip(rows[:, None] + k[None, :], 0, n_slow - 1)
    c = np.clip(cols[:, None] + k[None, :], 0, n_fast - 1)
    return r[:, :, None] * n_fast + c[:, None, :]


def _take(array, flat):
    """``array``'s values at flat indices (a C-contiguous array is read without a copy)."""
    array = np.asarray(array)
    if array.flags.c_contiguous:
        return array.reshape(-1).take(flat)
    n_fast = array.shape[1]
    return array[flat // n_fast, flat % n_fast]


def _grown(masks, grow: int):
    """Boolean squares (m, a, a) grown by ``grow`` pixels (a square), trimmed by ``grow`` on each side."""
    out = masks.copy()
    for k in range(1, grow + 1):
        out[:, k:] |= masks[:, :-k]
        out[:, :-k] |= masks[:, k:]
    rows = out.copy()
    for k in range(1, grow + 1):
        out[:, :, k:] |= rows[:, :, :-k]
        out[:, :, :-k] |= rows[:, :, k:]
    return out[:, grow:out.shape[1] - grow, grow:out.shape[2] - grow] if grow else out


def _band_sums(values, lo, hi):
    """``values[lo:hi].sum()`` for each pair (0 where ``lo == hi``), each range summed on its own."""
    if not len(lo):
        return np.zeros(0)
    ends = np.column_stack([lo, hi]).ravel()
    sums = np.add.reduceat(np.append(values, 0.0), ends)[::2]
    return np.where(hi > lo, sums, 0.0)


def aperture_significance(image, positions, geometry, *, exclude=None, radius: float = 2.0, window: int = 12,
                          band: float = 0.25, grow: int = 2, chunk: int = 512, with_pixels: bool = True,
                          workers: int = 1):
    """Net counts in a disc about each position and their significance over the background around it.

    The background of each disc pixel is the mean of the pixels of the
    square window about the position, outside ``radius + 2``, that lie at
    the same distance from the beam centre (within ``band`` pixels), leaving
    out those far above the median of their 1-pixel-wide band (ice grains,
    other spots): a powder ring's profile is followed and its grains do not
    raise it.  Under the null hypothesis (background only) the net counts
    have the variance of the background, Poisson, or the read noise where
    that is larger (from neighbouring background pixels' differences, which
    a ring's slope hardly inflates); their significance is
    :func:`poisson_z`.  Positions are handled ``chunk`` at a time (NumPy on
    stacked windows); each one's figures depend on its own window only, not
    on the positions tested with it.

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
        Raw counts.
    positions : (m, 2) array_like
        ``(fast, slow)``, corner convention.
    geometry : DetectorGeometry
        Its beam centre.
    exclude : (n_slow, n_fast) array_like, or a tuple of them, optional
        Pixels that are neither signal nor background where nonzero
        (masked pixels, other spots' labels), grown by ``grow`` pixels (a
        spot's faint edge).
    radius : float
        Disc radius, pixels.
    window : int
        Half-side of the square about each position, pixels.
    band : float
        Half-width in distance from the beam, pixels, of the background
        pixels averaged for a disc pixel (narrow: a ring's profile is
        curved).
    grow : int
        Pixels by which ``exclude`` is grown.
    chunk : int
        Positions per stack of windows (memory: about 10 kB per position).
    with_pixels : bool
        Also list each disc's pixels above their background (else
        ``pixels`` is None).
    workers : int
        Threads that test chunks side by side (NumPy releases the
        interpreter lock in its loops); the figures are the same.

    Returns
    -------
    snr : (m,) ndarray
        Significance of the net counts (:func:`poisson_z`); NaN where the
        window leaves the image or too few pixels are left.
    net : (m,) ndarray
        Net counts in the disc.
    offset : (m,) ndarray
        Distance (pixels) of the centroid of the disc's counts above their
        background from the position.
    pixels : list of (k, 2) int ndarrays, or None
        ``(row, col)`` of each disc's valid pixels above their background.
    """
    image = np.asarray(image)
    xy = np.asarray(positions, float).reshape(-1, 2)
    m = len(xy)
    net, var, offset = np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan)
    pixels = [np.zeros((0, 2), int)] * m if with_pixels else None
    n_slow, n_fast = image.shape
    cols, rows = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    inside = (rows >= window) & (cols >= window) & (rows < n_slow - window) & (cols < n_fast - window)
    todo = np.flatnonzero(inside & np.all(np.isfinite(xy), axis=1))
    arrays = [] if exclude is None else [np.asarray(a) for a in (
        exclude if isinstance(exclude, (tuple, list)) else [exclude]) if a is not None]

    def run(idx):  # writes its own positions' entries only
        _aperture_chunk(image, xy[idx], rows[idx], cols[idx], geometry, arrays, radius, window, band, grow,
                        idx, net, var, offset, pixels)

    parts = [todo[start:start + chunk] for start in range(0, len(todo), chunk)]
    if workers > 1 and len(parts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(int(workers), len(parts))) as pool:
            list(pool.map(run, parts))
    else:
        for idx in parts:
            run(idx)
    return poisson_z(net, var), net, offset, pixels


def _aperture_chunk(image, xy, rows, cols, geometry, exclude, radius, window, band, grow, idx, net, var, offset,
                    pixels):
    """:func:`aperture_significance` on stacked windows; writes into ``net``, ``var``, ``offset``, ``pixels``."""
    m = len(xy)
    flat = _window_index(rows, cols, window + grow, image.shape)  # the window grown: exclusions reach in
    inner = (slice(None), slice(grow, grow + 2 * window + 1), slice(grow, grow + 2 * window + 1))
    win = _take(image, flat[inner]).astype(np.float64)
    ok = np.isfinite(win)
    if exclude:
        left_out = np.zeros(flat.shape, bool)
        for a in exclude:  # only the windows are read: no full-size mask is made
            left_out |= _take(a, flat) != 0
        ok &= ~_grown(left_out, grow)
    k = np.arange(-window, window + 1)
    px = (cols[:, None] + 0.5 + k[None, :])[:, None, :]  # (m, 1, side)
    py = (rows[:, None] + 0.5 + k[None, :])[:, :, None]  # (m, side, 1)
    x, y = xy[:, 0][:, None, None], xy[:, 1][:, None, None]
    rho = np.sqrt((px - x) ** 2 + (py - y) ** 2)  # squares on the (m, side) axes, one root on the windows
    bx, by = geometry.beam_center
    # distance from the beam relative to the position's (a ring bends across the window)
    radial = np.sqrt((px - bx) ** 2 + (py - by) ** 2) - np.hypot(x - bx, y - by)
    disc = ok & (rho <= radius)
    back = ok & (rho > radius + 2.0)
    n_back = back.sum(axis=(1, 2))
    # read noise (or Poisson) from neighbouring background pixels' differences
    pair = back[:, :, 1:] & back[:, :, :-1]
    diffs = np.where(pair, np.abs(win[:, :, 1:] - win[:, :, :-1]), np.inf).reshape(m, -1)
    diffs.sort(axis=1)  # the pairs' differences first: their median by index
    n_pair = pair.sum(axis=(1, 2))
    mid = np.take_along_axis(diffs, np.stack([np.maximum(n_pair - 1, 0) // 2, n_pair // 2], 1), axis=1).mean(1)
    spread = np.where(n_pair >= 8, (1.4826 * mid) ** 2 / 2.0, 0.0)
    # background pixels, flat, with their window's number; outliers (grains, other spots' tails) far above
    # their 1-pixel band's level are left out: the level is the band's mean, then its inliers' mean
    w_b, r_b = np.nonzero(back.reshape(m, -1))
    v_b = win.reshape(m, -1)[w_b, r_b]
    d_b = radial.reshape(m, -1)[w_b, r_b]
    n_bands = 4 * window + 3  # radial offsets lie within ±√2·window
    group = w_b * n_bands + (np.rint(d_b).astype(np.int64) + 2 * window + 1)
    inlier = np.ones(len(v_b), bool)
    for _ in range(2):
        total = np.bincount(group, weights=np.where(inlier, v_b, 0.0), minlength=m * n_bands)
        count = np.bincount(group, weights=inlier, minlength=m * n_bands)
        level = (total / np.maximum(count, 1))[group]
        inlier = v_b <= level + 4.0 * np.sqrt(np.maximum(np.maximum(level, 1.0), spread[w_b])) + 1.0
    # each disc pixel's background: the inliers of its window within ``band`` of its distance from the beam
    span = 4.0 * window  # radial offsets lie within ±√2·window: windows apart on one sorted axis
    key = w_b * span + d_b
    order = np.argsort(key, kind="stable")
    key, v_k, in_k = key[order], v_b[order], inlier[order]
    cum_n = np.concatenate([[0], np.cumsum(in_k)])
    w_d, r_d = np.nonzero(disc.reshape(m, -1))
    u = w_d * span + radial.reshape(m, -1)[w_d, r_d]
    lo, hi = np.searchsorted(key, u - band, side="left"), np.searchsorted(key, u + band, side="right")
    count = cum_n[hi] - cum_n[lo]
    bg = _band_sums(np.where(in_k, v_k, 0.0), lo, hi) / np.maximum(count, 1)
    excess = win.reshape(m, -1)[w_d, r_d] - bg
    noise = np.maximum(np.maximum(bg, spread[w_d]), 1.0 / np.maximum(n_back[w_d], 1))
    good = (np.bincount(w_d, weights=count < 5, minlength=m) == 0) & (disc.sum(axis=(1, 2)) >= 3) & (n_back >= 20)
    net[idx] = np.where(good, np.bincount(w_d, weights=excess, minlength=m), np.nan)
    var[idx] = np.where(good, np.bincount(w_d, weights=noise, minlength=m), np.nan)
    # the centroid of the counts above background
    above = excess > 0
    wt = np.where(above, excess, 0.0)
    side = 2 * window + 1
    fx = (cols[w_d] + 0.5 + (r_d % side - window)) - xy[w_d, 0]
    fy = (rows[w_d] + 0.5 + (r_d // side - window)) - xy[w_d, 1]
    total = np.bincount(w_d, weights=wt, minlength=m)
    with np.errstate(all="ignore"):
        ox = np.bincount(w_d, weights=wt * fx, minlength=m) / total
        oy = np.bincount(w_d, weights=wt * fy, minlength=m) / total
    offset[idx] = np.where(good & (total > 0), np.hypot(ox, oy), np.nan)
    if pixels is None:
        return
    rr = rows[w_d] + r_d // side - window
    cc = cols[w_d] + r_d % side - window
    cut = np.searchsorted(w_d[above], np.arange(1, m))
    for i, part in zip(idx, np.split(np.column_stack([rr[above], cc[above]]), cut)):
        pixels[i] = part


def poisson_z(net, variance):
    """Significance (a normal quantile) of ``net`` counts over a background of ``variance``.

    The upper tail of a Poisson count whose mean is the variance: exact for
    photon counting (a background of mean ``μ`` has variance ``μ``), close to
    the normal tail ``net / sqrt(variance)`` where the variance is large (a
    bright background, a CCD's read noise).  NaN where either is NaN.
    """
    from scipy import special

    net, variance = np.asarray(net, float), np.asarray(variance, float)
    z = np.full(net.shape, np.nan)
    ok = np.isfinite(net) & np.isfinite(variance) & (variance > 0)
    n = net[ok] + variance[ok]
    # P(N >= n | μ) = P(n, μ), the regularised lower incomplete gamma function, for n > 0
    p = np.where(n > 0, special.gammainc(np.maximum(n, 1e-12), variance[ok]), 1.0)
    z[ok] = -special.ndtri(np.clip(p, 1e-300, 1.0))
    return z


class LatticeSearch(NamedTuple):
    """What :func:`lattice_spot_search` found and how it decided."""

    positions: np.ndarray  # (k, 2) predicted positions of the spots it adds, (fast, slow)
    pixels: list  # (row, col) of each added spot's pixels
    snr: np.ndarray  # (k,)
    threshold: dict  # (snr threshold, largest offset) chosen per zone (False: away from the ice lines, True: near)
    n_predicted: int  # predictions tested
    chance_rate: dict  # per zone, the fraction of turned predictions passing its threshold
    residual_px: float  # median distance of the indexed reference spots from their predictions


def lattice_spot_search(
    image,
    table,
    geometry,
    *,
    exclude=None,
    reference=None,
    thresholds=(3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 8.0),
    max_false_fraction: float = 0.1,
    radius: float | None = None,
    min_gap: float = 3.0,
    min_offset: float = 0.75,
    ice_margin: float = ICE_GRAIN_MARGIN,
    n_shuffles: int = 6,
    max_tests: int = 4000,
    seed: int = 0,
    workers: int = 1,
):
    """Spots at the positions a still's lattice predicts that ``table`` does not hold.

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
        Raw counts.
    table : SpotTable
        The spots found so far (``x``, ``y``, ``d``, ``sigma_radial``,
        ``sigma_azimuthal``).
    geometry : DetectorGeometry
    exclude : (n_slow, n_fast) array_like, or a tuple of them, optional
        Where nonzero, pixels neither signal nor background: e.g. ``(labels,
        pixel_mask)`` of the spots found and the masked pixels (see
        :func:`aperture_significance`).
    reference : (n,) bool array_like, optional
        The spots to index from (default: all).
    thresholds : sequence of float
        Aperture significance thresholds tried, lowest first.
    max_false_fraction : float
        Largest expected share of chance passes among the spots added.
    radius : float, optional
        Aperture radius, pixels (default: from the spots' RMS extent).
    min_gap : float
        Predictions closer than this (pixels) to a spot found are not tested.
    min_offset : float
        Centroid tolerance (pixels) of the middle rule: the larger of this
        and 3 × the reference spots' median distance from their predictions;
        half of it and 0.5 px more are tried too.
    ice_margin : float
        Predictions within this (Å⁻¹, in 1/d) of an ice line form the zone
        judged apart (default: where the ice rule looks for grains).
    n_shuffles : int
        Random turns of the predictions about the beam for the chance rate.
    max_tests : int
        At most this many predictions, and this many turned ones, are
        tested (random choices): time stays bounded on dense patterns.
    seed : int
        Seed of the turns and of the reference subsample (reproducible).
    workers : int
        Threads for the aperture tests (:func:`aperture_significance`);
        the result is the same.

    Returns
    -------
    LatticeSearch or None
        None where the frame gives no usable lattice.
    """
    from scipy.spatial import cKDTree

    from napari_xrd.core.spots.lattice_check import frame_lattice, turned_about_beam

    xy = np.asarray(table.fast_slow(), float).reshape(-1, 2)
    ref = np.ones(len(xy), bool) if reference is None else np.asarray(reference, bool)
    rng = np.random.default_rng(seed)
    lattice = frame_lattice(xy, geometry, ref, rng=rng)
    if lattice is None:
        return None
    r = geometry.scattering_vectors(xy[:, 0], xy[:, 1])
    x = lattice.coordinates(r)
    hkl = np.round(x)
    indexed = ref & np.all(np.abs(x - hkl) < 0.1, axis=0) & np.all(np.isfinite(xy), axis=1)
    if indexed.sum() < 20 or indexed[ref].mean() < 0.5:
        return None
    calc = lattice.points(hkl[:, indexed].T)
    r_len = np.linalg.norm(calc, axis=1)
    rel = np.abs(excitation_error(calc, geometry.wavelength)) / r_len
    residual = float(np.median(np.linalg.norm(geometry.still_spot_positions(calc) - xy[indexed], axis=1)))
    if not residual < 1.0:
        return None
    d_obs = 1.0 / r_len
    pred, _ = predict_still_spots(lattice, geometry, max_excitation=1.25 * float(np.quantile(rel, 0.99)),
                                  d_min=0.98 * float(np.min(d_obs)))
    found = xy[np.all(np.isfinite(xy), axis=1)]
    if len(found):
        pred = pred[cKDTree(found).query(pred)[0] >= min_gap]
    if len(pred) > max_tests:
        pred = pred[np.sort(rng.choice(len(pred), max_tests, replace=False))]
    if radius is None:
        ext = np.hypot(table["sigma_radial"], table["sigma_azimuthal"])[indexed]
        ext = ext[np.isfinite(ext)]
        radius = float(np.clip(1.5 * np.median(ext), 1.5, 4.0)) if len(ext) else 2.0
    max_offset = max(min_offset, 3.0 * residual)
    snr, _, offset, pixels = aperture_significance(image, pred, geometry, exclude=exclude, radius=radius,
                                                   workers=workers)
    # chance: the predictions turned about the beam by random angles (same resolution, no lattice)
    turned = [turned_about_beam(pred, geometry.beam_center, rng) for _ in range(n_shuffles)]
    turned = np.concatenate(turned) if turned else np.zeros((0, 2))
    if len(found):
        turned = turned[cKDTree(found).query(turned)[0] >= min_gap]
    if len(turned) > max_tests:
        turned = turned[np.sort(rng.choice(len(turned), max_tests, replace=False))]
    c_snr, _, c_offset, _ = aperture_significance(image, turned, geometry, exclude=exclude, radius=radius,
                                                  with_pixels=False, workers=workers)
    # zones (near an ice line, or not) are judged apart: their chance rates differ
    zone, c_zone = _zone(pred, geometry, ice_margin), _zone(turned, geometry, ice_margin)
    add = np.zeros(len(pred), bool)
    chosen, rates = {}, {}
    for z in (False, True):
        ok, c_ok = (zone == z) & np.isfinite(snr), (c_zone == z) & np.isfinite(c_snr)
        chosen[z], rates[z] = (np.inf, max_offset), float("nan")
        best = 0.0
        for limit in (0.5 * max_offset, max_offset, max_offset + 0.5):
            for t in thresholds:
                hit = ok & (snr >= t) & (offset <= limit)
                c = float(np.mean((c_snr[c_ok] >= t) & (c_offset[c_ok] <= limit))) if c_ok.any() else 1.0
                false = expected_chance_passes(c, int(ok.sum()), int(hit.sum()))
                # the rule that adds most spots beyond chance while chance stays a small share of them
                if hit.any() and false <= max_false_fraction * hit.sum() and hit.sum() - false > best:
                    best, chosen[z], rates[z] = hit.sum() - false, (t, limit), c
        t, limit = chosen[z]
        add |= ok & (snr >= t) & (offset <= limit)
    return LatticeSearch(pred[add], [pixels[i] for i in np.flatnonzero(add)], snr[add], chosen, int(
        np.isfinite(snr).sum()), rates, residual)


def expected_chance_passes(rate: float, n_tested: int, n_passed: int) -> float:
    """Expected number of passes by chance among ``n_tested`` predictions of which ``n_passed`` passed.

    Only the predictions with no spot there (``n_empty`` of them) can pass
    by chance, each with probability ``rate`` (measured at positions off
    the lattice), so the expectation is ``rate · n_empty``.  ``n_empty`` is
    not known, but the predictions that failed are at least the empty ones
    that failed: ``n_tested - n_passed >= n_empty · (1 - rate)`` in
    expectation, which bounds it:

        rate · n_empty <= rate · (n_tested - n_passed) / (1 - rate).

    ``rate · n_tested`` (every prediction empty) is the cruder bound: on a
    frame whose predictions mostly hold spots the finder missed (the
    lines of spotty ice) it counts the real spots' tests as chances too,
    and refuses them.

    Parameters
    ----------
    rate : float
        Fraction of off-lattice positions that pass, in [0, 1].
    n_tested, n_passed : int
        Predictions tested, and those that passed.

    Returns
    -------
    float
        The bound; inf where ``rate`` is 1 (everything passes by chance).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")
    if not 0 <= n_passed <= n_tested:
        raise ValueError(f"need 0 <= n_passed <= n_tested, got {n_passed} and {n_tested}")
    if rate >= 1.0:
        return float("inf")
    return rate * (n_tested - n_passed) / (1.0 - rate)


def _zone(positions, geometry, ice_margin):
    """True where a position lies within ``ice_margin`` (Å⁻¹ in 1/d) of an ice line."""
    from napari_xrd.core.spots.ice import ice_line_distance

    if not len(positions):
        return np.zeros(0, bool)
    d = np.atleast_1d(geometry.resolution_at(positions[:, 0], positions[:, 1]))
    return ice_line_distance(d) < ice_margin
