"""The spot table: one row per labelled spot.

Columns (all 1-D NumPy arrays of length ``n_spots``):

``x``, ``y``
    Intensity-weighted centroid, ``(fast, slow)`` pixels in the DIALS corner
    convention (centre of the first pixel at ``(0.5, 0.5)``).
``intensity``
    Summed raw counts over the spot's pixels (as ``dials.find_spots``' ``intensity.sum.value``).
``background``
    Summed local background under the spot, when a background image is given
    (:func:`~napari_xrd.core.spots.find_spots` fills it from the median of
    the pixels around the spot), else NaN (``null`` in JSON).
``size``
    Number of pixels.
``peak``
    Largest pixel value.
``d``
    Resolution (Å) at the centroid, NaN without a geometry.
``sigma_radial``, ``sigma_azimuthal``
    The spot's intensity-weighted RMS extent (pixels) along the line from
    the beam centre through its centroid and across it; NaN without a
    geometry.  Bandpass and mosaic spread stretch Bragg spots radially and
    azimuthally; powder-ring grains and artefacts often differ.
``ice_ring``
    (added by :func:`~napari_xrd.core.spots.find_spots`) True where the spot
    is more likely an ice grain than a Bragg spot on a frame with spotty ice
    (``ice_rings="auto"`` or ``"keep"``), or lies on any ice ring (``"filter"``).
``ice_probability``
    (added by ``find_spots`` with a geometry) The probability that the spot
    is an ice grain rather than a Bragg spot, from its resolution and its
    look against the frame's other spots; 0 on a frame without spotty ice
    (:func:`~napari_xrd.core.spots.ice.spotty_ice_probability`).
``beamstop_shadow``
    (added by ``find_spots``) True where the centroid lies in the beamstop's
    shadow (kept with ``beamstop_shadow="keep"`` only).
``predicted``
    (added by ``find_spots``) True where the spot was found at a position
    that the frame's own lattice predicts, by a test there
    (:mod:`~napari_xrd.core.spots.lattice_search`), not by the finder's
    search of the whole frame.
``snr``
    (added by ``find_spots``) Integrated signal-to-noise ratio over the local
    background (:mod:`napari_xrd.core.spots.significance`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SpotTable", "spot_table", "spot_table_from_pixels"]

COLUMNS = ("x", "y", "intensity", "background", "size", "peak", "d", "sigma_radial", "sigma_azimuthal")


class SpotTable(dict):
    """A dict of equal-length column arrays with a few conveniences."""

    def __len__(self) -> int:  # number of spots, not of columns
        return int(len(self["x"])) if "x" in self else 0

    @property
    def n_spots(self) -> int:
        return len(self)

    def rows(self) -> list[dict]:
        """One dict per spot (JSON-friendly Python floats/ints)."""
        out = []
        for i in range(len(self)):
            row = {}
            for k in COLUMNS:
                v = self[k][i]
                row[k] = int(v) if k == "size" else (None if not np.isfinite(v) else float(v))
            for extra in ("snr", "ice_probability"):
                if extra in self:
                    v = float(self[extra][i])
                    row[extra] = v if np.isfinite(v) else None
            for flag in ("ice_ring", "beamstop_shadow", "predicted"):
                if flag in self:
                    row[flag] = bool(self[flag][i])
            out.append(row)
        return out

    def fast_slow(self) -> np.ndarray:
        """Centroids as an ``(n_spots, 2)`` array ``(fast, slow)``."""
        return np.stack([self["x"], self["y"]], axis=-1) if len(self) else np.zeros((0, 2))


def spot_table(labels, image, *, geometry=None, background=None) -> SpotTable:
    """Measure labelled spots.

    Parameters
    ----------
    labels : (n_slow, n_fast) int array_like
        0 = background, spots numbered 1..n (gaps in the numbering allowed).
    image : (n_slow, n_fast) array_like
        Raw counts.
    geometry : DetectorGeometry, optional
        Gives the resolution ``d`` of each centroid.
    background : (n_slow, n_fast) array_like, optional
        Local background estimate, summed under each spot into ``background``.

    Returns
    -------
    table : SpotTable
        Rows ordered by label; labels with no pixels are skipped.
    """
    labels = np.asarray(labels)
    image = np.asarray(image)  # no full-frame float64 copy: only spot pixels are converted
    if labels.shape != image.shape:
        raise ValueError(f"labels shape {labels.shape} does not match image shape {image.shape}")
    sel = labels > 0
    slow_i, fast_i = np.nonzero(sel)
    bg = None if background is None else np.asarray(background, dtype=np.float64)[sel]
    return spot_table_from_pixels(labels[sel], slow_i, fast_i, image[sel], geometry=geometry, background=bg)


def spot_table_from_pixels(label, slow, fast, values, *, geometry=None, background=None) -> SpotTable:
    """Measure spots given as lists of their pixels (what :func:`spot_table` measures on a label image).

    Parameters
    ----------
    label : (k,) int array_like
        Spot number (1..n) of each pixel.
    slow, fast : (k,) int array_like
        Row and column of each pixel.
    values : (k,) array_like
        Raw counts of each pixel.
    geometry : DetectorGeometry, optional
    background : (k,) array_like, optional
        Local background of each pixel.

    Returns
    -------
    table : SpotTable
        Rows ordered by spot number; numbers with no pixels are skipped.
    """
    lab = np.asarray(label).astype(np.int64)
    empty = SpotTable({k: np.zeros(0, dtype=np.int64 if k == "size" else np.float64) for k in COLUMNS})
    if lab.size == 0:
        return empty
    slow_i, fast_i = np.asarray(slow), np.asarray(fast)
    val = np.asarray(values).astype(np.float64)
    n = int(lab.max()) + 1
    size = np.bincount(lab, minlength=n)
    present = np.flatnonzero(size)
    present = present[present > 0]
    wts = np.clip(np.nan_to_num(val), 0, None)
    wsum = np.bincount(lab, weights=wts, minlength=n)
    fx = np.bincount(lab, weights=wts * (fast_i + 0.5), minlength=n)
    fy = np.bincount(lab, weights=wts * (slow_i + 0.5), minlength=n)
    # unweighted centroid where the spot has no positive counts
    ux = np.bincount(lab, weights=fast_i + 0.5, minlength=n) / np.maximum(size, 1)
    uy = np.bincount(lab, weights=slow_i + 0.5, minlength=n) / np.maximum(size, 1)
    pos = wsum > 0
    x = np.where(pos, fx / np.where(pos, wsum, 1), ux)
    y = np.where(pos, fy / np.where(pos, wsum, 1), uy)
    intensity = np.bincount(lab, weights=np.nan_to_num(val), minlength=n)
    peak = np.full(n, -np.inf)
    np.maximum.at(peak, lab, np.nan_to_num(val, nan=-np.inf))
    if background is not None:
        bg = np.bincount(lab, weights=np.asarray(background, dtype=np.float64), minlength=n)
    else:
        bg = np.full(n, np.nan)
    if geometry is not None:
        sig_r, sig_a = _radial_azimuthal_extent(lab, fast_i, slow_i, wts, wsum, x, y, geometry.beam_center)
        sig_r, sig_a = sig_r[present], sig_a[present]
        x, y = x[present], y[present]
        d = np.asarray(geometry.resolution_at(x, y), dtype=np.float64)
    else:
        x, y = x[present], y[present]
        d = sig_r = sig_a = np.full(len(present), np.nan)
    return SpotTable(
        x=x,
        y=y,
        intensity=intensity[present],
        background=bg[present],
        size=size[present].astype(np.int64),
        peak=peak[present],
        d=np.atleast_1d(d),
        sigma_radial=sig_r,
        sigma_azimuthal=sig_a,
    )


def _radial_azimuthal_extent(lab, fast_i, slow_i, wts, wsum, x, y, beam_center):
    """Per label: weighted RMS offset of its pixels from the centroid ``(x, y)``, along and across the radius."""
    n = len(x)
    cx, cy = x - beam_center[0], y - beam_center[1]
    norm = np.hypot(cx, cy)
    safe = np.where(norm > 0, norm, 1.0)
    ux = np.where(norm > 0, cx / safe, 1.0)  # a spot on the beam centre: the fast axis stands for the radius
    uy = np.where(norm > 0, cy / safe, 0.0)
    dx, dy = fast_i + 0.5 - x[lab], slow_i + 0.5 - y[lab]
    along = dx * ux[lab] + dy * uy[lab]
    across = dy * ux[lab] - dx * uy[lab]
    w = np.where(wsum[lab] > 0, wts, 1.0)  # unweighted where the spot has no positive counts
    wt = np.bincount(lab, weights=w, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        var_r = np.bincount(lab, weights=w * along**2, minlength=n) / wt
        var_a = np.bincount(lab, weights=w * across**2, minlength=n) / wt
    return np.sqrt(var_r), np.sqrt(var_a)
