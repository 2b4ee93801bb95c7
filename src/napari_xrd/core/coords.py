"""The one place where pixel coordinates change convention.

* DIALS/dxtbx convention (Python API, JSON, CLI): ``(fast, slow)`` pixels,
  origin at the outer corner of the first pixel, first pixel centre at
  ``(0.5, 0.5)``.
* napari layers and NumPy indexing: ``(row, col) = (slow, fast)`` with pixel
  centres on integers, first pixel centre at ``(0, 0)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dials_to_napari", "napari_to_dials", "pixel_index"]


def dials_to_napari(fast_slow) -> np.ndarray:
    """Convert ``(fast, slow)`` corner-convention points to napari ``(row, col)``.

    Parameters
    ----------
    fast_slow : array_like, shape (2,) or (n, 2)

    Returns
    -------
    row_col : ndarray, same shape
        ``row = slow - 0.5``, ``col = fast - 0.5``.

    Examples
    --------
    >>> dials_to_napari([0.5, 0.5]).tolist()
    [0.0, 0.0]
    """
    p = np.asarray(fast_slow, dtype=float)
    return p[..., ::-1] - 0.5


def napari_to_dials(row_col) -> np.ndarray:
    """Convert napari ``(row, col)`` points to ``(fast, slow)`` corner convention.

    Inverse of :func:`dials_to_napari`.  Extra leading coordinates (a frame
    index of a stack, say) are dropped: only the last two are used.
    """
    p = np.asarray(row_col, dtype=float)[..., -2:]
    return p[..., ::-1] + 0.5


def pixel_index(fast_slow, shape) -> tuple[np.ndarray, np.ndarray]:
    """NumPy ``(row, col)`` indices of the pixels containing corner-convention points.

    Parameters
    ----------
    fast_slow : array_like, shape (n, 2)
        ``(fast, slow)`` points, DIALS corner convention.
    shape : (n_slow, n_fast)
        Image shape; points outside it are clipped to the nearest edge pixel.

    Returns
    -------
    row, col : (n,) int ndarrays

    Examples
    --------
    >>> [a.tolist() for a in pixel_index([[0.99, 2.5]], (4, 4))]
    [[2], [0]]
    """
    p = np.asarray(fast_slow, dtype=float).reshape(-1, 2)
    row = np.clip(np.floor(p[:, 1]).astype(int), 0, shape[0] - 1)
    col = np.clip(np.floor(p[:, 0]).astype(int), 0, shape[1] - 1)
    return row, col
