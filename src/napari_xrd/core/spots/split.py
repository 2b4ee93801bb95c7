"""Splitting U-Net spot masks where two spots touch.

Close reflections (split crystals, long cells, streaks side by side) can
join into one connected region of the thresholded probability map, and one
centroid between them then stands for both.  The network's probability is
often still high in each spot's core and lower on the bridge between them,
so a region holding more than one core (pixels above ``core_threshold``) is
cut by a watershed of the probability seeded at the cores
(:func:`split_touching_spots`).  Between two strong spots a few pixels apart
the probability can stay near 1 throughout; the counts still show two
maxima, and :func:`split_at_intensity_peaks` cuts there.
"""

from __future__ import annotations

import numpy as np

__all__ = ["split_touching_spots", "split_at_intensity_peaks", "smoothed_counts"]


def split_touching_spots(labels, probability, *, core_threshold: float = 0.9, min_core_size: int = 2) -> np.ndarray:
    """Cut labelled spots that contain several probability cores.

    Parameters
    ----------
    labels : (n_slow, n_fast) int array_like
        0 = background, 1..n spots (e.g. from
        :func:`~napari_xrd.core.spots.dispersion.label_spots`).
    probability : (n_slow, n_fast) float array_like
        The U-Net's spot probability.
    core_threshold : float
        Probability of a core pixel.
    min_core_size : int
        Cores with fewer pixels do not seed a spot of their own.

    Returns
    -------
    labels : (n_slow, n_fast) int32 ndarray
        0 = background, 1..m, m >= n; unsplit spots keep their pixels, and
        the numbering follows raster order of each spot's first pixel.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    prob = np.asarray(probability, dtype=np.float32)
    labels, out, n = _start(labels, prob, "probability")
    if n == 0:
        return out
    cores, n_cores = ndimage.label((prob > core_threshold) & (labels > 0))
    if n_cores < 2:
        return out
    core_size = np.bincount(cores.ravel(), minlength=n_cores + 1)
    big = core_size >= min_core_size
    big[0] = False
    cores = np.where(big[cores], cores, 0)
    owner = np.zeros(n_cores + 1, dtype=np.int64)  # which spot each core lies in
    owner[cores[cores > 0]] = labels[cores > 0]
    per_spot = np.bincount(owner[big], minlength=n + 1)
    next_label = n + 1
    boxes = ndimage.find_objects(out)
    for k in np.flatnonzero(per_spot >= 2):
        sl = boxes[k - 1]
        region = labels[sl] == k
        seeds = np.where(region, cores[sl], 0)
        parts = watershed(-prob[sl], markers=seeds, mask=region)
        ids = [i for i in np.unique(parts) if i]
        for i in ids[1:]:  # the first part keeps the spot's number
            out[sl][parts == i] = next_label
            next_label += 1
    return _raster_order(out, next_label)


def smoothed_counts(image, *, pixel_mask=None, sigma: float = 1.0) -> np.ndarray:
    """Counts smoothed by a Gaussian, as :func:`split_at_intensity_peaks` judges maxima.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        Raw counts; negative, NaN and infinite values count as 0.
    pixel_mask : (n_slow, n_fast) array_like, optional
        0 = good pixel; masked pixels count as 0.
    sigma : float
        Smoothing, pixels.

    Returns
    -------
    (n_slow, n_fast) float32 ndarray
    """
    from scipy import ndimage

    image = np.asarray(image)
    counts = np.clip(np.nan_to_num(image.astype(np.float32, copy=False), nan=0.0, posinf=0.0), 0, None)
    if pixel_mask is not None:
        counts = np.where(np.asarray(pixel_mask) == 0, counts, np.float32(0))
    return ndimage.gaussian_filter(counts, sigma)


def split_at_intensity_peaks(labels, image, *, pixel_mask=None, h: float = 2.0, sigma: float = 1.0,
                             min_size: int = 6, smooth=None) -> np.ndarray:
    """Cut labelled spots whose smoothed counts have several clear maxima.

    In each spot of at least ``min_size`` pixels the counts are smoothed
    (Gaussian, ``sigma`` pixels) and variance-stabilised (Anscombe,
    ``2 sqrt(I + 3/8)``, whose Poisson noise is about 1 per pixel and about
    0.3 after smoothing); maxima that rise more than ``h`` above the saddle
    to any higher one (h-maxima) seed a watershed of the spot.  A streak or
    a single spot has one such maximum; two spots a few pixels apart have
    two.

    Parameters
    ----------
    labels : (n_slow, n_fast) int array_like
        0 = background, 1..n spots.
    image : (n_slow, n_fast) array_like
        Raw counts.
    pixel_mask : (n_slow, n_fast) array_like, optional
        0 = good pixel; masked pixels count as 0.
    h : float
        Least depth of a maximum, Anscombe units of the smoothed counts.
    sigma : float
        Smoothing, pixels.
    min_size : int
        Smaller spots are not examined.
    smooth : (n_slow, n_fast) ndarray, optional
        :func:`smoothed_counts` of ``image`` with this ``pixel_mask`` and
        ``sigma``, if already computed.

    Returns
    -------
    labels : (n_slow, n_fast) int32 ndarray
        0 = background, 1..m, m >= n, numbered in raster order of each
        spot's first pixel; unsplit spots keep their pixels.
    """
    from scipy import ndimage
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    image = np.asarray(image)
    labels, out, n = _start(labels, image, "image")
    if n == 0:
        return out
    if smooth is None:
        smooth = smoothed_counts(image, pixel_mask=pixel_mask, sigma=sigma)
    elif np.shape(smooth) != image.shape:
        raise ValueError(f"smooth {np.shape(smooth)} and image {image.shape} differ in shape")
    # candidates: spots with two or more local maxima of the smoothed counts (most have one)
    sizes = np.bincount(out.ravel(), minlength=n + 1)
    big = sizes >= min_size
    big[0] = False
    rows, cols = np.nonzero(big[out])
    padded = np.pad(smooth, 1, mode="edge")
    centre = padded[rows + 1, cols + 1]
    is_max = np.ones(rows.size, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                is_max &= centre >= padded[rows + 1 + dy, cols + 1 + dx]
    n_max = np.bincount(out[rows[is_max], cols[is_max]], minlength=n + 1)
    boxes = ndimage.find_objects(out)
    next_label = n + 1
    for k in np.flatnonzero(n_max >= 2):
        sl = boxes[k - 1]
        region = out[sl] == k
        a = 2.0 * np.sqrt(smooth[sl] + 0.375)
        a = np.where(region, a, a[region].min())  # maxima of this spot only
        seeds, n_seeds = ndimage.label(h_maxima(a, h) & region)
        if n_seeds < 2:
            continue
        parts = watershed(-a, markers=seeds, mask=region)
        for i in range(2, n_seeds + 1):  # the first part keeps the spot's number
            out[sl][parts == i] = next_label
            next_label += 1
    return _raster_order(out, next_label)


def _start(labels, other, name):
    """``labels`` checked against ``other``'s shape, a writable int32 copy, and the number of spots."""
    labels = np.asarray(labels)
    if labels.shape != other.shape:
        raise ValueError(f"labels {labels.shape} and {name} {other.shape} differ in shape")
    out = labels.astype(np.int32, copy=True)
    return labels, out, int(out.max()) if out.size else 0


def _raster_order(out, next_label):
    """Labels renumbered 1..m in raster order of each spot's first pixel."""
    flat = out.ravel()
    present = np.flatnonzero(flat)
    _, first = np.unique(flat[present], return_index=True)
    order = np.argsort(present[first])
    relabel = np.zeros(next_label, dtype=np.int32)
    relabel[np.unique(flat[present])[order]] = np.arange(1, len(order) + 1, dtype=np.int32)
    return relabel[out]
