"""Helpers shared by the beam-centre estimators: validity, binning, sampling."""

from __future__ import annotations

import math

import numpy as np

from napari_xrd.core.geometry import DetectorGeometry


def check_image(image, pixel_mask=None, name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Validate a 2-D frame; return it as float32 and the boolean valid-pixel map.

    Pixels that are masked, negative (detector markers) or not finite are
    invalid.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_slow, n_fast) frame, got shape {arr.shape}")
    if arr.size == 0 or min(arr.shape) < 16:
        raise ValueError(f"{name} is too small for a beam-centre estimate: shape {arr.shape}")
    data = arr.astype(np.float32, copy=False)
    valid = np.isfinite(data) & (data >= 0)
    if pixel_mask is not None:
        pm = np.asarray(pixel_mask)
        if pm.shape != arr.shape:
            raise ValueError(f"pixel_mask shape {pm.shape} does not match {name} shape {arr.shape}")
        valid &= pm == 0
    if valid.sum() < 0.05 * valid.size:
        raise ValueError(f"{name}: fewer than 5% of its pixels are valid; cannot estimate a beam centre")
    return data, valid


def _edges(n: int, m: int) -> np.ndarray:
    return np.round(np.linspace(0, n, m + 1)).astype(int)[:-1]


def block_sums(data: np.ndarray, valid: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of valid pixel values and counts of valid pixels in ``factor`` × ``factor`` blocks.

    Returns
    -------
    sums : (n_slow // factor, n_fast // factor) float64 ndarray
    counts : same shape, int ndarray
    """
    n_slow, n_fast = data.shape
    h, w = n_slow // factor, n_fast // factor
    d = np.where(valid, data, np.float32(0))[: h * factor, : w * factor]
    v = valid[: h * factor, : w * factor]
    s = np.zeros((h, w), dtype=np.float64)
    c = np.zeros((h, w), dtype=np.int64)
    for dy in range(factor):  # strided adds: about half the time of a sum over reshaped axes
        for dx in range(factor):
            s += d[dy::factor, dx::factor]
            c += v[dy::factor, dx::factor]
    return s, c


def block_mean(image, *, pixel_mask=None, out_shape=None, factor=None, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean of valid pixels in blocks.

    Give either ``out_shape`` (blocks of unequal size when it does not divide
    the image) or an integer ``factor``.

    Returns
    -------
    binned : (m_slow, m_fast) float32 ndarray
        0 where a block has no valid pixel.
    binned_valid : (m_slow, m_fast) bool ndarray
        Blocks with at least a quarter of their pixels valid.
    """
    if valid is None:
        data, valid = check_image(image, pixel_mask)
    else:
        data = np.asarray(image, dtype=np.float32)
    n_slow, n_fast = data.shape
    if out_shape is None:
        s, c = block_sums(data, valid, factor)
        sizes = factor * factor
    else:
        rs = _edges(n_slow, out_shape[0])
        cs = _edges(n_fast, out_shape[1])
        # along the fast (contiguous) axis first: three times faster
        s = np.add.reduceat(np.add.reduceat(np.where(valid, data, np.float32(0)), cs, axis=1), rs, axis=0)
        v = np.asarray(valid, dtype=bool).view(np.uint8)
        c = np.add.reduceat(np.add.reduceat(v, cs, axis=1, dtype=np.int32), rs, axis=0)
        sizes = np.diff(np.append(rs, n_slow))[:, None] * np.diff(np.append(cs, n_fast))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(c > 0, s / np.maximum(c, 1), 0.0).astype(np.float32)
    return out, c >= 0.25 * sizes


def sample(data: np.ndarray, valid: np.ndarray, fast, slow, *, order: int = 1) -> np.ndarray:
    """Image values at corner-convention points; NaN where invalid or outside."""
    from scipy.ndimage import map_coordinates

    fast = np.asarray(fast, dtype=float)
    slow = np.asarray(slow, dtype=float)
    rows = slow - 0.5
    cols = fast - 0.5
    bad = ~np.isfinite(rows) | ~np.isfinite(cols)
    rows = np.where(bad, -10.0, rows)
    cols = np.where(bad, -10.0, cols)
    n_slow, n_fast = data.shape
    inside = (rows >= 0) & (cols >= 0) & (rows <= n_slow - 1) & (cols <= n_fast - 1) & ~bad
    vals = map_coordinates(data, [rows, cols], order=order, mode="nearest", prefilter=False)
    ri = np.clip(np.rint(rows).astype(int), 0, n_slow - 1)
    ci = np.clip(np.rint(cols).astype(int), 0, n_fast - 1)
    # a linear sample touching an invalid pixel is invalid
    ok = inside & valid[ri, ci]
    if order > 0:
        r0 = np.clip(np.floor(rows).astype(int), 0, n_slow - 1)
        c0 = np.clip(np.floor(cols).astype(int), 0, n_fast - 1)
        r1 = np.clip(r0 + 1, 0, n_slow - 1)
        c1 = np.clip(c0 + 1, 0, n_fast - 1)
        ok &= valid[r0, c0] & valid[r0, c1] & valid[r1, c0] & valid[r1, c1]
    return np.where(ok, vals, np.nan)


def polar_directions(two_theta, azimuth) -> np.ndarray:
    """Unit ray directions for a (azimuth, 2θ) grid, shape ``azimuth.shape + two_theta.shape + (3,)``."""
    tt = np.asarray(two_theta, dtype=float)
    az = np.asarray(azimuth, dtype=float)
    st = np.sin(tt)[None, ...]
    return np.stack(
        np.broadcast_arrays(
            st * np.cos(az)[..., None], st * np.sin(az)[..., None], np.cos(tt)[None, ...]
        ),
        axis=-1,
    )


def binned_geometry(geometry: DetectorGeometry, factor_fast: float, factor_slow: float, shape) -> DetectorGeometry:
    """Geometry of a block-binned image (square pixels assumed: uses ``factor_fast``)."""
    bf, bs = geometry.beam_center
    return geometry.replace(
        shape=tuple(shape),
        pixel_size=geometry.pixel_size * factor_fast,
        beam_center=(bf / factor_fast, bs / factor_slow),
    )


def levenberg_marquardt(fun, n: int, *, max_iter: int = 12, tol: float = 0.02, h: float = 0.5, jacobian=None):
    """Minimise ``|fun(q)|²`` from ``q = 0`` (q in units where a step of 1 is a sensible difference).

    Central differences with steps of ``h`` units (a large ``h`` averages
    over the kinks of a binned model), unless ``jacobian(q)`` gives the
    ``(m, n)`` Jacobian itself.  Stops when no step lowers the cost or every
    component of a step is below ``tol``.

    Returns
    -------
    q : (n,) ndarray
    jacobian : (m, n) ndarray or None
        At the last linearisation, per unit of ``q``.
    """
    q = np.zeros(n)
    r = fun(q)
    c = float(r @ r)
    lam = 1e-3
    jac = None
    for _ in range(max_iter):
        try:
            if jacobian is not None:
                new_jac = jacobian(q)
            else:
                new_jac = np.stack([(fun(q + h * e) - fun(q - h * e)) / (2 * h) for e in np.eye(n)], axis=1)
        except ValueError:  # the differences reach an impossible geometry: stop here
            return q, jac
        jac = new_jac
        a = jac.T @ jac
        g = jac.T @ r
        while True:
            step = -np.linalg.solve(a + lam * np.diag(np.diag(a) + 1e-12), g)
            try:
                r_new = fun(q + step)
                c_new = float(r_new @ r_new)
            except ValueError:  # a step to an impossible geometry (tilt ≥ 60°...)
                c_new = math.inf
            if c_new < c:
                q, r, c = q + step, r_new, c_new
                lam = max(lam / 5, 1e-6)
                break
            lam *= 8
            if lam > 1e6:
                return q, jac
        if np.max(np.abs(step)) < tol:
            break
    return q, jac
