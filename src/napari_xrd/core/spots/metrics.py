"""Spot-finding scores: matching predicted to true spots, recall, precision, IoU."""

from __future__ import annotations

import numpy as np

__all__ = ["match_spots", "spot_scores", "mask_iou", "centroids_from_mask"]


def centroids_from_mask(mask, image=None) -> np.ndarray:
    """``(n, 2)`` centroids ``(fast, slow)`` (corner convention) of 4-connected blobs."""
    from napari_xrd.core.spots.dispersion import label_spots
    from napari_xrd.core.spots.table import spot_table

    labels = label_spots(mask, min_spot_size=1, max_spot_size=np.iinfo(np.int32).max)
    img = np.ones(labels.shape, np.float32) if image is None else image
    return spot_table(labels, img).fast_slow()


def match_spots(predicted, true, *, radius: float = 3.0):
    """Which predicted and which true spots have a partner within ``radius`` px.

    Parameters
    ----------
    predicted, true : (n, 2) array_like
        ``(fast, slow)`` positions.
    radius : float
        Pixels.

    Returns
    -------
    predicted_hit : (n_pred,) bool ndarray
        True where a true spot lies within ``radius``.
    true_hit : (n_true,) bool ndarray
        True where a predicted spot lies within ``radius``.
    """
    from scipy.spatial import cKDTree

    p = np.asarray(predicted, float).reshape(-1, 2)
    t = np.asarray(true, float).reshape(-1, 2)
    if len(p) == 0 or len(t) == 0:
        return np.zeros(len(p), bool), np.zeros(len(t), bool)
    dp, _ = cKDTree(t).query(p, distance_upper_bound=radius)
    dt, _ = cKDTree(p).query(t, distance_upper_bound=radius)
    return np.isfinite(dp), np.isfinite(dt)


def spot_scores(predicted, true, *, radius: float = 3.0, true_weight=None) -> dict:
    """Recall, precision and F1 of predicted spot positions.

    ``true_weight`` (bool per true spot) restricts recall to some true spots
    (e.g. SNR >= 5) while precision still counts a prediction as right when
    it lies near *any* true spot.
    """
    ph, th = match_spots(predicted, true, radius=radius)
    if true_weight is not None:
        th = th[np.asarray(true_weight, bool)]
    recall = float(th.mean()) if th.size else float("nan")
    precision = float(ph.mean()) if ph.size else float("nan")
    f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
    return {"recall": recall, "precision": precision, "f1": f1, "n_predicted": int(ph.size), "n_true": int(th.size)}


def mask_iou(predicted, true, *, valid=None) -> float:
    """Intersection over union of two boolean masks (over ``valid`` pixels)."""
    p = np.asarray(predicted, bool)
    t = np.asarray(true, bool)
    if valid is not None:
        p = p & valid
        t = t & valid
    union = np.count_nonzero(p | t)
    return float(np.count_nonzero(p & t) / union) if union else 1.0
