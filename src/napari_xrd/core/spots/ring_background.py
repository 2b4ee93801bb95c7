"""Powder rings as a background for spot finding: a profile in 2θ, at every pixel.

Water, ice and other powder rings are a few pixels wide on a detector.  The
U-Net's local background (medians of 16-pixel blocks, interpolated) cannot
follow a ring that narrow: it leaves a ridge along the ring and troughs
beside it, and a weak Bragg spot on the ridge looks like part of the ring.
On development frames with smooth ice rings the U-Net missed a quarter of
the spots with SNR 5–8 that sat on the rings.

A ring depends on 2θ only (on a tilted detector too, once 2θ is computed
with the tilt), so its shape is measured by averaging the frame over very
thin shells of constant 2θ (``DetectorGeometry.equivalent_radius_map``), with bright pixels (Bragg spots) clipped, and
put back at every pixel.  What the rings do not explain (polarisation,
gaps, a beamstop's halo, anything not centrosymmetric) is left to the block
medians, which then see a smooth residual.

This needs the beam centre to a pixel or so: with a centre 2 mm off, the
shells smear the rings and the profile explains nothing more than the blocks
would.  :func:`~napari_xrd.core.spots.inference.predict_spot_probability`
therefore keeps the profile only when it leaves less structure than the
blocks alone.
"""

from __future__ import annotations

import numpy as np

__all__ = ["powder_ring_background"]


def powder_ring_background(
    values,
    geometry,
    *,
    valid=None,
    radius=None,
    shell_px: float = 0.5,
    clip: float = 3.0,
    min_sd: float = 0.0,
    n_iter: int = 2,
    min_pixels: int = 8,
    row_stride: int = 2,
    with_opposite: bool = False,
):
    """The azimuthal mean of ``values`` in thin shells of constant 2θ, at every pixel.

    In each shell the mean and standard deviation are computed, pixels above
    ``mean + clip · max(sd, min_sd)`` (Bragg spots, zingers) are dropped, and
    the two recomputed, ``n_iter`` times in all.  The profile is
    interpolated linearly between shell centres; shells with fewer than
    ``min_pixels`` valid pixels take the interpolation of their neighbours.

    Parameters
    ----------
    values : (n_slow, n_fast) array_like
        Counts, or any transform of them (the U-Net uses the Anscombe
        transform ``2 sqrt(I + 3/8)``).
    geometry : DetectorGeometry
        Its shape must be ``values.shape``; the beam centre must be good to a
        pixel or so for the profile to be sharp.
    valid : (n_slow, n_fast) bool array_like, optional
        Pixels to use (default: all finite values).
    radius : (n_slow, n_fast) array_like, optional
        ``geometry.equivalent_radius_map()``, if already at hand.
    shell_px : float
        Shell width, pixels of equivalent radius (``distance · tan 2θ``).
    clip : float
        Clipping threshold in standard deviations.
    min_sd : float
        Floor on the standard deviation in the clipping test (1 for
        Anscombe-transformed counts, whose Poisson noise is 1).
    n_iter : int
        Passes (the first with every pixel).
    min_pixels : int
        Fewest valid pixels a shell needs to count.
    row_stride : int
        The shells' statistics use every ``row_stride``-th row (a shell
        half a pixel wide still holds about 1.5 · radius pixels at 2).
    with_opposite : bool
        Also return, as a cross-check of the beam centre, the background
        that each pixel gets from the profile measured in the quadrant
        opposite its own about the beam centre (quadrants split along the
        fast and slow axes).  A centre that is off moves the rings outwards
        on one side and inwards on the other, so that background fits
        worse than the whole frame's profile.

    Returns
    -------
    background : (n_slow, n_fast) float32 ndarray
        Finite everywhere (0 where no shell has enough pixels).
    opposite : (n_slow, n_fast) float32 ndarray
        Only with ``with_opposite``.
    """
    values = np.asarray(values)
    if values.shape != tuple(geometry.shape):
        raise ValueError(f"values shape {values.shape} does not match geometry shape {tuple(geometry.shape)}")
    u = geometry.equivalent_radius_map() if radius is None else np.asarray(radius, dtype=np.float32)
    ok = np.isfinite(values) & np.isfinite(u)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    step = max(int(row_stride), 1)
    sel = ok[::step]
    k = (u[::step][sel] / shell_px).astype(np.int64)
    v = values[::step][sel].astype(np.float64)
    if k.size == 0:
        zero = np.zeros(values.shape, dtype=np.float32)
        return (zero, zero.copy()) if with_opposite else zero
    n_shells = int(k.max()) + 1
    keep = np.ones(k.size, dtype=bool)
    for i in range(max(int(n_iter), 1)):
        kk, vv = (k, v) if i == 0 else (k[keep], v[keep])
        n, mean, sd = _shell_stats(kk, vv, n_shells)
        limit = np.nan_to_num(mean + clip * np.maximum(np.nan_to_num(sd), min_sd), nan=np.inf)
        keep = v <= limit[k]
    if not with_opposite:
        n, mean, _ = _shell_stats(k[keep], v[keep], n_shells)
        return _expand(u, shell_px, _filled(mean, n >= min_pixels))
    rows, cols = _quadrant_split(geometry)
    quadrant = (2 * (np.arange(values.shape[0])[::step] >= rows)[:, None]
                + (np.arange(values.shape[1]) >= cols)[None, :]).astype(np.int8)
    q = quadrant[sel][keep].astype(np.int64)
    nq, meanq, _ = _shell_stats(k[keep] + n_shells * q, v[keep], 4 * n_shells)
    nq, meanq = nq.reshape(4, n_shells), meanq.reshape(4, n_shells)
    n = nq.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(meanq * nq, axis=0) / n
    # each quadrant (a rectangle) is also looked up in the profile of the one opposite it
    opposite_tables = [_filled(meanq[3 - j], nq[3 - j] >= min_pixels) for j in range(4)]
    return _expand(u, shell_px, _filled(mean, n >= min_pixels), opposite_tables, split=(rows, cols))


#: rows of a frame expanded from a profile at a time: temporaries of a few MB, which the allocator reuses
#: (a full-size EIGER 16M temporary is mapped afresh, and page-faulted, each time)
_CHUNK_PIXELS = 1 << 21


def _expand(u, shell_px, table, opposite_tables=None, *, split=None):
    """A profile in shells of ``u`` interpolated at every pixel, chunk by chunk of rows.

    With ``opposite_tables`` (one profile per quadrant, quadrants split at
    ``split = (first row, first column)`` past the beam), also each pixel
    from its quadrant's table.
    """
    n_slow, n_fast = u.shape
    out = np.empty(u.shape, dtype=np.float32)
    other = None if opposite_tables is None else np.empty(u.shape, dtype=np.float32)
    step = max(1, _CHUNK_PIXELS // max(n_fast, 1))
    bounds = sorted({0, n_slow, *range(0, n_slow, step), *([min(max(split[0], 0), n_slow)] if split else [])})
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        i0, w = _weights(u[r0:r1], shell_px, table.size)
        out[r0:r1] = _lookup(table, i0, w)
        if other is not None:
            rows, cols = split
            lower = int(r0 >= rows)  # the chunk lies on one side of the split row
            for half, c in ((0, slice(0, cols)), (1, slice(cols, None))):
                if other[r0:r1, c].size:
                    other[r0:r1, c] = _lookup(opposite_tables[2 * lower + half], i0[:, c], w[:, c])
    return out if other is None else (out, other)


def _shell_stats(k, v, n_bins):
    n = np.bincount(k, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(k, v, minlength=n_bins) / n
        sd = np.sqrt(np.maximum(np.bincount(k, v * v, minlength=n_bins) / n - mean**2, 0.0))
    return n, mean, sd


def _filled(mean, good) -> np.ndarray:
    """The profile with its empty or thin shells interpolated (0 where none is good), float32."""
    if not good.any():
        return np.zeros(mean.shape, dtype=np.float32)
    x = np.arange(mean.size)
    return np.interp(x, x[good], mean[good]).astype(np.float32)


def _weights(u, shell_px, n):
    """Lower shell index (int32) and the upper one's weight (float32) for linear interpolation at radii ``u``."""
    t = np.where(np.isfinite(u), u, 0).astype(np.float32, copy=False)
    t *= np.float32(1.0 / shell_px)  # in place: fewer full-size arrays to allocate
    t -= np.float32(0.5)
    np.clip(t, 0, n - 1, out=t)
    i0 = t.astype(np.int32)
    np.minimum(i0, max(n - 2, 0), out=i0)
    t -= i0
    return i0, t


def _lookup(table, i0, w) -> np.ndarray:
    upper = i0 + 1
    np.minimum(upper, table.size - 1, out=upper)
    lo = np.take(table, i0)
    hi = np.take(table, upper)
    del upper
    hi -= lo
    hi *= w
    hi += lo
    return hi


def _quadrant_split(geometry) -> tuple[int, int]:
    """First row and first column past the beam centre: quadrant ``2 · (slow > beam) + (fast > beam)``.

    Quadrant ``3 - q`` is opposite ``q``; a pixel is past the centre when its
    centre (corner convention, ``index + 0.5``) is.
    """
    n_slow, n_fast = geometry.shape
    rows = int(np.count_nonzero((np.arange(n_slow) + 0.5) <= geometry.beam_center[1]))
    cols = int(np.count_nonzero((np.arange(n_fast) + 0.5) <= geometry.beam_center[0]))
    return rows, cols
