"""How far above its local background each spot stands: an integrated I/σ(I).

The U-Net labels pixels by their look; it has no photon-counting test of its
own.  :func:`spot_significance` gives every labelled spot the background
under it and the significance of its net counts, so that spots no finder
could tell from noise (a few photons on a near-empty background, a fluctuation
of a bright one) can be dropped, as the dispersion finder's per-pixel tests
drop them.

For each spot, in a square window about its centroid and leaving out every
labelled pixel and masked pixel:

- background ``b``: the median count per pixel;
- background variance per pixel ``v``: the robust variance of the counts
  (from the median absolute difference of horizontal neighbours, which a
  smooth gradient does not inflate); where that is below 1 count², the
  larger of it and their mean (the Poisson floor: on a near-empty background
  most pixels read 0 and the spread says nothing; a CCD's read noise keeps
  its spread above 1, and its pedestal must not enter).

Then ``net = intensity - size · b`` and ``snr = net / sqrt(size · v + max(net, 0))``:
background noise plus the net counts' own Poisson noise, counts taken as
photons.  A CCD's pedestal cancels in ``net`` and its read noise enters
through ``v``; a gain above 1 ADU per photon makes the signal term too small,
so the estimate errs towards keeping spots.
"""

from __future__ import annotations

import numpy as np

from napari_xrd.core.coords import pixel_index

__all__ = ["spot_significance"]


def spot_significance(labels, image, table, *, pixel_mask=None, window: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Background under each spot and its integrated signal-to-noise ratio.

    Parameters
    ----------
    labels : (n_slow, n_fast) int ndarray
        Spot ``k`` is label ``k`` (row ``k - 1`` of ``table``).
    image : (n_slow, n_fast) ndarray
        Raw counts.
    table : SpotTable
        From :func:`~napari_xrd.core.spots.table.spot_table` on ``labels``
        (``x``, ``y``, ``intensity``, ``size``).
    pixel_mask : (n_slow, n_fast) array_like, optional
        0 = good pixel.
    window : int
        Side of the square, pixels, about each centroid where the background
        is measured.

    Returns
    -------
    background : (n_spots,) float64 ndarray
        Local background summed over the spot's pixels (counts).
    snr : (n_spots,) float64 ndarray
        ``net / sqrt(size · v + max(net, 0))`` (see the module notes); +inf
        on a background that reads exactly 0 everywhere around a spot with
        counts, NaN where no background pixel is left in the window.
    """
    labels = np.asarray(labels)
    n = len(table)
    background = np.full(n, np.nan)
    snr = np.full(n, np.nan)
    if n == 0:
        return background, snr
    ny, nx = labels.shape
    pixel_mask = None if pixel_mask is None else np.asarray(pixel_mask)
    half = window // 2
    ys, xs = pixel_index(table.fast_slow(), labels.shape)
    size = np.asarray(table["size"], dtype=np.float64)
    intensity = np.asarray(table["intensity"], dtype=np.float64)
    for k in range(n):
        y0, y1 = max(ys[k] - half, 0), min(ys[k] + half + 1, ny)
        x0, x1 = max(xs[k] - half, 0), min(xs[k] + half + 1, nx)
        win = np.asarray(image[y0:y1, x0:x1], dtype=np.float64)
        ok = (labels[y0:y1, x0:x1] == 0) & np.isfinite(win)  # window by window: no full-size mask is made
        if pixel_mask is not None:
            ok &= pixel_mask[y0:y1, x0:x1] == 0
        if ok.sum() < 8:
            continue
        vals = win[ok]
        b = float(np.median(vals))
        pair = ok[:, 1:] & ok[:, :-1]
        diffs = (win[:, 1:] - win[:, :-1])[pair]
        robust = (1.4826 * float(np.median(np.abs(diffs))) / np.sqrt(2.0)) ** 2 if diffs.size >= 8 else 0.0
        # the mean as a floor only where counts are too few for a spread (a
        # CCD's pedestal would inflate it; its read noise keeps ``robust`` >= 1)
        v = robust if robust >= 1.0 else max(robust, float(np.mean(vals)), 0.0)
        net = intensity[k] - size[k] * b
        background[k] = size[k] * b
        var = size[k] * v + max(net, 0.0)
        snr[k] = net / np.sqrt(var) if var > 0 else (np.inf if net > 0 else 0.0)
    return background, snr
