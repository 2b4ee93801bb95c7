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
        0 = background, 1..n spots that do not touch (4-connected
        components, as :func:`~napari_xrd.core.spots.dispersion.label_spots`
        gives): each is judged on its own pixels.
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
    spots = _Spots(labels, prob, "probability")
    # only spots with enough core pixels for two cores are looked at, each in its bounding box
    core = prob.ravel()[spots.index] > core_threshold
    n_core = np.bincount(spots.label[core], minlength=spots.n + 1)
    for k in np.flatnonzero(n_core >= 2 * max(min_core_size, 1)):
        sl, region = spots.box(k)
        cores, n_cores = ndimage.label((prob[sl] > core_threshold) & region)
        size = np.bincount(cores.ravel(), minlength=n_cores + 1)
        big = size >= min_core_size
        big[0] = False
        if big.sum() < 2:
            continue
        parts = watershed(-prob[sl], markers=np.where(big[cores], cores, 0), mask=region)
        spots.relabel(k, parts, sl)  # the first core's part keeps the spot's number
    return spots.in_raster_order()


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
    spots = _Spots(labels, image, "image")
    if spots.n == 0:
        return spots.in_raster_order()
    if smooth is None:
        smooth = smoothed_counts(image, pixel_mask=pixel_mask, sigma=sigma)
    elif np.shape(smooth) != image.shape:
        raise ValueError(f"smooth {np.shape(smooth)} and image {image.shape} differ in shape")
    # candidates: spots with two or more local maxima of the smoothed counts (most have one); beyond the
    # frame's edge the edge pixel's value stands in
    sizes = np.bincount(spots.label, minlength=spots.n + 1)
    at = np.flatnonzero(sizes[spots.label] >= min_size)
    rows, cols = spots.rows[at], spots.cols[at]
    ny, nx = smooth.shape
    centre = smooth[rows, cols]
    is_max = np.ones(rows.size, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                is_max &= centre >= smooth[np.clip(rows + dy, 0, ny - 1), np.clip(cols + dx, 0, nx - 1)]
    n_max = np.bincount(spots.label[at][is_max], minlength=spots.n + 1)
    for k in np.flatnonzero(n_max >= 2):
        sl, region = spots.box(k)
        a = 2.0 * np.sqrt(smooth[sl] + 0.375)
        a = np.where(region, a, a[region].min())  # maxima of this spot only
        seeds, n_seeds = ndimage.label(h_maxima(a, h) & region)
        if n_seeds < 2:
            continue
        spots.relabel(k, watershed(-a, markers=seeds, mask=region), sl)  # the first seed's part keeps the number
    return spots.in_raster_order()


class _Spots:
    """The spot pixels of a label image, kept sparse: splitting looks at a few spots in their boxes.

    ``index`` (flat pixel indices, raster order), ``rows``, ``cols`` and
    ``label`` (int64) describe every labelled pixel; ``n`` is the largest
    label.  :meth:`relabel` gives new numbers to parts of a spot;
    :meth:`in_raster_order` writes the full label image, numbered 1..m in
    raster order of each spot's first pixel.
    """

    def __init__(self, labels, other, name):
        labels = np.asarray(labels)
        if labels.shape != np.shape(other):
            raise ValueError(f"labels {labels.shape} and {name} {np.shape(other)} differ in shape")
        self.labels, self.shape = labels, labels.shape
        flat = labels.ravel()
        self.index = np.flatnonzero(flat)
        self.label = flat[self.index].astype(np.int64)
        self.rows, self.cols = np.divmod(self.index, labels.shape[1]) if labels.ndim == 2 and labels.size else (
            self.index, self.index)
        self.n = int(self.label.max()) if self.label.size else 0
        self.next_label = self.n + 1
        self._order = None

    def _pixels(self, k):
        """Positions (into ``index``) of spot ``k``'s pixels, in raster order."""
        if self._order is None:
            self._order = np.argsort(self.label, kind="stable")
            self._start = np.searchsorted(self.label[self._order], np.arange(self.n + 2))
        return self._order[self._start[k] : self._start[k + 1]]

    def box(self, k):
        """Spot ``k``'s bounding box (slices) and its pixels there (bool)."""
        at = self._pixels(k)
        r, c = self.rows[at], self.cols[at]
        sl = (slice(int(r.min()), int(r.max()) + 1), slice(int(c.min()), int(c.max()) + 1))
        return sl, self.labels[sl] == k

    def relabel(self, k, parts, sl):
        """New numbers for the parts after the first (``parts``: ``k``'s box ``sl``); unlabelled pixels stay ``k``."""
        at = self._pixels(k)
        part = parts[self.rows[at] - sl[0].start, self.cols[at] - sl[1].start]
        ids = np.unique(part[part > 0])
        for i in ids[1:]:
            self.label[at[part == i]] = self.next_label
            self.next_label += 1

    def in_raster_order(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=np.int32)
        if self.label.size:
            present, first = np.unique(self.label, return_index=True)  # first: raster order (index is sorted)
            relabel = np.zeros(int(present[-1]) + 1, dtype=np.int32)
            relabel[present[np.argsort(first)]] = np.arange(1, present.size + 1, dtype=np.int32)
            out.ravel()[self.index] = relabel[self.label]
        return out
