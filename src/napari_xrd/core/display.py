"""Display choices for diffraction images that do not depend on napari.

Contrast limits, which resolution rings to draw, and the hexagonal-ice ring
list live here so that the widgets, the CLI screenshots and the tests share
them.
"""

from __future__ import annotations

import math

import numpy as np

from napari_xrd.core.geometry import DetectorGeometry

__all__ = [
    "HEXAGONAL_ICE_D_SPACINGS",
    "auto_contrast",
    "resolution_ring_d_spacings",
    "log_ramp",
]

#: d-spacings (Å) of the strongest rings of hexagonal ice Ih (a = 4.498 Å,
#: c = 7.338 Å, P6₃/mmc), from low to high resolution.
HEXAGONAL_ICE_D_SPACINGS = (3.895, 3.669, 3.441, 2.671, 2.249, 2.071, 1.948, 1.917, 1.883, 1.835, 1.720)


def auto_contrast(
    frame: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    percentiles: tuple[float, float] = (1.0, 99.5),
    max_samples: int = 2_000_000,
) -> tuple[float, float]:
    """Contrast limits for a diffraction frame from percentiles of valid pixels.

    Diffraction images are mostly weak background with a few very bright
    Bragg spots, so min/max limits show a black image; percentiles of the
    valid (unmasked, finite) pixels show background texture and spots.

    Parameters
    ----------
    frame : (n_slow, n_fast) ndarray
    valid : (n_slow, n_fast) bool ndarray, optional
        Pixels to consider (default: all finite pixels that are not CBF
        markers, i.e. >= 0 for signed data).
    percentiles : (float, float)
        Lower and upper percentile.
    max_samples : int
        Pixels are subsampled on a regular grid above this count (speed).

    Returns
    -------
    (low, high) : tuple of float
        ``high > low`` always.
    """
    frame = np.asarray(frame)
    step = max(1, int(math.sqrt(frame.size / max_samples)))
    sub = frame[::step, ::step]
    ok = np.isfinite(sub) if sub.dtype.kind == "f" else np.ones(sub.shape, dtype=bool)
    if sub.dtype.kind in "if":
        ok &= sub >= 0
    if valid is not None:
        ok &= np.asarray(valid)[::step, ::step]
    vals = sub[ok]
    if vals.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(vals.astype(np.float64), percentiles)
    if not hi > lo:
        hi = lo + max(1.0, abs(lo) * 1e-3)
    return (float(lo), float(hi))


def _nice(d: float) -> float:
    """Round a d-spacing to a value a crystallographer would label a ring with."""
    if d >= 10:
        return float(round(d))
    if d >= 3:
        return round(d * 2) / 2
    return round(d, 1) if d >= 1.5 else round(d, 2)


def resolution_ring_d_spacings(geometry: DetectorGeometry, n: int = 6) -> list[float]:
    """Resolution values (Å) for ``n`` rings spread evenly in 1/d over the image.

    The outermost ring touches the image edge along the axis with the most
    room from the beam centre, so every ring is at least partly visible.

    Returns
    -------
    d_spacings : list of float
        Decreasing (low to high resolution), rounded to "nice" values.
    """
    n_slow, n_fast = geometry.shape
    bf, bs = geometry.beam_center
    # along the axis with the most room, the outermost ring touches the edge
    room = {(n_fast, bs): n_fast - bf, (0.0, bs): bf, (bf, n_slow): n_slow - bs, (bf, 0.0): bs}
    edge_point = max(room, key=room.get)
    edge_d = float(geometry.resolution_at(*edge_point))
    if not np.isfinite(edge_d):
        edge_d = geometry.d_range()[1]
    inv_max = 1.0 / edge_d
    out: list[float] = []
    for i in range(1, n + 1):
        d = _nice(1.0 / (inv_max * i / n))
        if d not in out:
            out.append(d)
    return out


def log_ramp(n: int = 256, *, strength: float = 1000.0) -> np.ndarray:
    """Grey levels of a logarithmic display ramp, shape (n,).

    ``log(1 + s t) / log(1 + s)`` for t in [0, 1]: a colormap built from it
    shows the contrast-limited data on a log scale while the data (and the
    value under the cursor) stay raw.
    """
    t = np.linspace(0.0, 1.0, n)
    return np.log1p(strength * t) / np.log1p(strength)
