"""Bragg spots for geometry fits: bright compact maxima, centroided at full resolution.

Used by the spot-based beam-centre estimators (:mod:`.lattice`,
:func:`.friedel.friedel_pair_geometry`), which need sub-pixel positions of
the strongest spots, fast, not a full spot table (see
:mod:`napari_xrd.core.spots` for that).
"""

from __future__ import annotations

import numpy as np

__all__ = ["spot_centroids", "find_spot_centroids", "SPOT_MIN_SNR"]

#: a spot's summed signal over the background's noise below which it is taken as noise
SPOT_MIN_SNR = 5.0


def spot_centroids(
    image, valid, peaks, *, half_width: int = 3, search: int = 3, min_snr: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution centroids of spots near approximate positions.

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
    valid : (n_slow, n_fast) bool ndarray
    peaks : (n, 2) ndarray
        Approximate ``(fast, slow)`` positions (corner convention).
    half_width : int
        The centroid uses a ``(2 half_width + 1)²`` window about the brightest
        pixel found within ``search`` pixels of the peak.
    search : int
    min_snr : float
        Keep spots whose summed signal is at least this many times the
        Poisson noise of the background summed over the window
        (``sqrt((b + 1) n)``, ``b`` the background per pixel).

    Returns
    -------
    centroids : (m, 2) ndarray
        ``(fast, slow)``, corner convention, for the spots whose window is
        whole and valid.
    intensity : (m,) ndarray
        Background-subtracted summed counts in the window.
    """
    data = np.asarray(image, dtype=np.float32)
    n_slow, n_fast = data.shape
    p = np.asarray(peaks, float).reshape(-1, 2)
    if len(p) == 0:
        return np.empty((0, 2)), np.empty(0)
    big = half_width + search
    r0 = np.floor(p[:, 1]).astype(int)
    c0 = np.floor(p[:, 0]).astype(int)
    ok = (r0 >= 2 * big) & (r0 < n_slow - 2 * big) & (c0 >= 2 * big) & (c0 < n_fast - 2 * big)
    r0, c0 = r0[ok], c0[ok]
    # brightest pixel near the peak
    o = np.arange(-search, search + 1)
    win = data[r0[:, None, None] + o[None, :, None], c0[:, None, None] + o[None, None, :]]
    vwin = valid[r0[:, None, None] + o[None, :, None], c0[:, None, None] + o[None, None, :]]
    flat = np.where(vwin, win, -np.inf).reshape(len(r0), -1)
    k = np.argmax(flat, axis=1)
    r0 = r0 + k // len(o) - search
    c0 = c0 + k % len(o) - search
    # background: median of a ring around the centroid window
    ob = np.arange(-big, big + 1)
    rb = r0[:, None, None] + ob[None, :, None]
    cb = c0[:, None, None] + ob[None, None, :]
    wb = data[rb, cb]
    vb = valid[rb, cb]
    ring = (np.abs(ob)[:, None] > half_width) | (np.abs(ob)[None, :] > half_width)
    ring_vals = np.where(vb & ring[None], wb, np.nan).reshape(len(r0), -1)
    has_ring = np.any(np.isfinite(ring_vals), axis=1)
    bg = np.full(len(r0), np.nan)
    if has_ring.any():
        # the mean of the ring without its outliers (a neighbouring spot): the
        # median of low Poisson counts lies below their mean (1 for a mean
        # of 1.5), and the noise of a higher background then passes as spots
        rv = ring_vals[has_ring]
        med = np.nanmedian(rv, axis=1)
        with np.errstate(invalid="ignore"):
            rv = np.where(rv <= (med + 4.0 * np.sqrt(np.clip(med, 0, None) + 1.0))[:, None], rv, np.nan)
        bg[has_ring] = np.nanmean(rv, axis=1)
    inner = ~ring
    whole = np.all(vb[:, inner], axis=1) & np.isfinite(bg)
    sig = np.clip(wb - bg[:, None, None], 0, None) * inner[None]
    tot = sig.sum(axis=(1, 2))
    keep = whole & (tot > 0)
    if min_snr > 0:
        # the test uses the signal without clipping: clipped at 0, the noise
        # of every pixel adds up to a positive "signal" (on a flat frame most
        # spots that passed were noise)
        net = ((wb - bg[:, None, None]) * inner[None]).sum(axis=(1, 2))
        with np.errstate(invalid="ignore"):
            keep &= net >= min_snr * np.sqrt((np.clip(bg, 0, None) + 1.0) * inner.sum())
    dy = (ob[None, :, None] * sig).sum(axis=(1, 2))
    dx = (ob[None, None, :] * sig).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        fast = c0 + 0.5 + dx / tot
        slow = r0 + 0.5 + dy / tot
    cen = np.stack([fast, slow], axis=1)[keep]
    # one spot found twice (two nearby peaks): keep the first
    if len(cen) > 1:
        from scipy.spatial import cKDTree

        pairs = cKDTree(cen).query_pairs(1.0, output_type="ndarray")
        drop = np.zeros(len(cen), bool)
        drop[pairs[:, 1]] = True
        return cen[~drop], tot[keep][~drop]
    return cen, tot[keep]


def find_spot_centroids(image, valid, *, max_peaks: int = 600) -> np.ndarray:
    """Bright compact maxima of a frame, centroided at full resolution.

    :func:`napari_xrd.core.beam_center.friedel.find_peaks_2d` (on a binned
    copy), then :func:`spot_centroids`.

    Spots whose summed signal is below ``SPOT_MIN_SNR`` times the background's
    noise are dropped: on a nearly empty background the peak search also
    returns noise.

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
    valid : (n_slow, n_fast) bool ndarray
    max_peaks : int
        Most peaks kept (the brightest).

    Returns
    -------
    spots : (n, 2) ndarray
        ``(fast, slow)``, corner convention, brightest (summed) first.
    """
    from napari_xrd.core.beam_center.friedel import find_peaks_2d

    data = np.asarray(image, dtype=np.float32)
    peaks = find_peaks_2d(data, valid, max_peaks=max_peaks)
    f = max(1, int(max(data.shape) // 800))
    cen, tot = spot_centroids(data, valid, peaks, half_width=3, search=max(2, f), min_snr=SPOT_MIN_SNR)
    return cen[np.argsort(tot)[::-1]]
