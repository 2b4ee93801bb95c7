"""Splitting U-Net spot masks where two spots touch.

Close reflections (split crystals, long cells, streaks side by side) can
join into one connected region of the thresholded probability map, and one
centroid between them then stands for both.  The network's probability is
still high in each spot's core and lower on the bridge between them, so a
region holding more than one core (pixels above ``core_threshold``) is cut
by a watershed of the probability seeded at the cores.
"""

from __future__ import annotations

import numpy as np

__all__ = ["split_touching_spots"]


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

    labels = np.asarray(labels)
    prob = np.asarray(probability, dtype=np.float32)
    if labels.shape != prob.shape:
        raise ValueError(f"labels {labels.shape} and probability {prob.shape} differ in shape")
    out = labels.astype(np.int32, copy=True)
    n = int(out.max()) if out.size else 0
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
    # renumber in raster order of each spot's first pixel
    flat = out.ravel()
    present = np.flatnonzero(flat)
    _, first = np.unique(flat[present], return_index=True)
    order = np.argsort(present[first])
    relabel = np.zeros(next_label, dtype=np.int32)
    relabel[np.unique(flat[present])[order]] = np.arange(1, len(order) + 1, dtype=np.int32)
    return relabel[out]
