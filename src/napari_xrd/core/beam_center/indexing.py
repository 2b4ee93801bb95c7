"""A still's spots in reciprocal space, and indexing them without a known cell.

A spot at detector position ``p`` maps, through a geometry, to the
scattering vector ``r(p) = (k̂(p) - ŝ0) / λ`` on the Ewald sphere
(:meth:`DetectorGeometry.scattering_vectors`);
:meth:`DetectorGeometry.still_spot_positions` is the inverse for lattice
points turned onto the sphere (the stills model of DIALS and of
:mod:`napari_xrd.core.simulate.still`).

:func:`index_reciprocal_lattice` finds the real-space basis: the Fourier
transform ``F(a) = Σ exp(2πi a·r)`` is large for real-space lattice vectors
``a``; it is searched along many directions with histogram FFTs (the 1-D
method of Steller, Bolotovsky and Rossmann, 1997), the best vectors are
refined, and the three that index most spots with the smallest cell become
the basis.
"""

from __future__ import annotations

import math

import numpy as np


__all__ = ["index_reciprocal_lattice", "cell_parameters"]


def _directions(step_rad: float) -> np.ndarray:
    """Nearly uniform unit vectors on a hemisphere (z ≥ 0), ``step_rad`` apart."""
    n = int(2 * math.pi / step_rad**2)
    i = np.arange(n) + 0.5
    z = 1.0 - i / n  # uniform in z on the hemisphere
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    rho = np.sqrt(1.0 - z * z)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


def _transform(a, r):
    """``Σ exp(2πi a·r)`` for each row of ``a`` (m, 3)."""
    return np.exp(2j * np.pi * (a @ r.T)).sum(axis=1)


def _refine_vector(a, r, tol=0.2, rounds=3):
    """Least-squares real-space vector ``a`` so that ``a·r - φ`` is integer for the spots it indexes."""
    for _ in range(rounds):
        f = _transform(a[None], r)[0]
        off = np.angle(f) / (2 * np.pi)
        x = r @ a - off
        n = np.round(x)
        sel = np.abs(x - n) < tol
        if sel.sum() < 6:
            return a, 0.0
        A = np.column_stack([r[sel], np.ones(sel.sum())])
        sol, *_ = np.linalg.lstsq(A, n[sel], rcond=None)
        a = sol[:3]
    f = _transform(a[None], r)[0]
    return a, abs(f) / len(r)


def index_reciprocal_lattice(
    r,
    *,
    min_cell: float = 15.0,
    max_cell: float = 250.0,
    step_deg: float = 1.5,
    n_candidates: int = 30,
    tolerance: float = 0.2,
):
    """Real-space basis of the lattice that best indexes scattering vectors.

    Parameters
    ----------
    r : (n, 3) ndarray
        Scattering vectors (Å⁻¹); the lattice may be translated (wrong beam
        centre) by up to a fraction of a cell.
    min_cell, max_cell : float
        Range of real-space vector lengths searched, Å.
    step_deg : float
        Angular step of the direction search.
    n_candidates : int
        Best distinct vectors kept for the basis search.
    tolerance : float
        A spot is indexed when all three ``a_i·r - φ_i`` lie within this of
        integers.

    Returns
    -------
    basis : (3, 3) ndarray or None
        Rows are real-space vectors ``a, b, c`` (Å).
    indices : (n, 3) int ndarray
        ``m = round(basis @ r - φ)``.
    indexed : (n,) bool ndarray
    """
    from scipy import fft

    r = np.asarray(r, float)
    n = len(r)
    if n < 10:
        return None, np.zeros((n, 3), int), np.zeros(n, bool)
    dirs = _directions(math.radians(step_deg))
    r_max = float(np.max(np.linalg.norm(r, axis=1)))
    bw = 1.0 / (4.0 * max_cell)
    n_bins = int(2 ** math.ceil(math.log2(2 * r_max / bw + 8)))
    lo_k = max(1, int(math.floor(min_cell * n_bins * bw)))
    hi_k = min(n_bins // 2, int(math.ceil(max_cell * n_bins * bw)) + 1)
    best_amp = np.empty(len(dirs))
    best_len = np.empty(len(dirs))
    for s in range(0, len(dirs), 1500):
        d = dirs[s : s + 1500]
        x = r @ d.T  # (n, m)
        idx = np.floor((x + r_max) / bw).astype(np.int64) + np.arange(d.shape[0])[None, :] * n_bins
        h = np.bincount(idx.ravel(), minlength=d.shape[0] * n_bins).reshape(d.shape[0], n_bins)
        amp = np.abs(fft.rfft(h.astype(np.float32), axis=1))[:, lo_k:hi_k]
        # the fundamental: the shortest length whose peak is near the best one
        top = amp.max(axis=1)
        first = np.argmax(amp >= 0.8 * top[:, None], axis=1)
        best_amp[s : s + d.shape[0]] = amp[np.arange(d.shape[0]), first]
        best_len[s : s + d.shape[0]] = (first + lo_k) / (n_bins * bw)
    order = np.argsort(best_amp)[::-1]
    # the strongest directions, each kept unless parallel to one kept before it
    top = dirs[order[: 40 * n_candidates]] * best_len[order[: 40 * n_candidates], None]
    unit = top / np.linalg.norm(top, axis=1)[:, None]
    parallel = np.abs(unit @ unit.T) > _COS_PARALLEL
    kept = []
    for i in range(len(top)):
        if kept and parallel[i, kept].any():
            continue
        kept.append(i)
        if len(kept) >= 2 * n_candidates:
            break
    cands = list(top[kept])
    refined = []
    for a in cands:
        a, q = _refine_vector(a, r, tolerance)
        # a period needs layers to repeat: along a vector whose projections
        # span less than 3 layers (one near the beam, where a still's spots
        # barely spread) any length "indexes" them
        if np.ptp(r @ a) < 2.0:
            continue
        if q > 0.25 and min_cell * 0.8 <= np.linalg.norm(a) <= max_cell * 1.2:
            if not _parallel_to_any(a, [c for c, _ in refined]):
                refined.append((a, q))
    refined = sorted(refined, key=lambda t: -t[1])[:n_candidates]
    if len(refined) < 3:
        return None, np.zeros((n, 3), int), np.zeros(n, bool)
    vecs = np.array([v for v, _ in refined])
    off = np.angle(_transform(vecs, r)) / (2 * np.pi)
    x = vecs @ r.T - off[:, None]
    near = np.abs(x - np.round(x)) < tolerance  # (m, n)
    m = len(vecs)
    ii, jj, kk = np.array([(i, j, k) for i in range(m) for j in range(i + 1, m) for k in range(j + 1, m)]).T
    vol = np.abs(np.einsum("ij,ij->i", vecs[ii], np.cross(vecs[jj], vecs[kk])))
    lens = np.linalg.norm(vecs, axis=1)
    flatness = vol / (lens[ii] * lens[jj] * lens[kk])
    frac = (near[ii] & near[jj] & near[kk]).mean(axis=1)
    ok = flatness > 0.2
    if not ok.any():
        return None, np.zeros((n, 3), int), np.zeros(n, bool)
    # most spots indexed; among near-ties the smallest cell
    score = np.where(ok, frac, -1.0)
    good = ok & (score >= score.max() - 0.03)
    t = np.flatnonzero(good)[np.argmin(vol[good])]
    basis = _refine_basis(vecs[[ii[t], jj[t], kk[t]]], r, tolerance)
    xb = basis @ r.T - np.angle(_transform(basis, r))[:, None] / (2 * np.pi)
    indices = np.round(xb).T.astype(int)
    indexed = np.all(np.abs(xb - np.round(xb)) < tolerance, axis=0)
    return basis, indices, indexed


def _refine_basis(basis, r, tolerance, rounds=3):
    """The three vectors refined together: ``r ≈ B m + t`` by least squares over the spots they index.

    Vectors refined one at a time (:func:`_refine_vector`) each absorb their
    own offset; where the spots barely constrain a vector along the beam it
    can settle off the lattice with an offset that mimics a translation (a
    wrong beam centre).  One ``B`` and one translation ``t`` for all three
    put it back on the lattice.  Returns the real-space basis ``B⁻¹`` (rows).
    """
    for _ in range(rounds):
        x = basis @ r.T - np.angle(_transform(basis, r))[:, None] / (2 * np.pi)
        m = np.round(x)
        sel = np.all(np.abs(x - m) < tolerance, axis=0)
        if sel.sum() < 12:
            break
        sol, *_ = np.linalg.lstsq(np.column_stack([m[:, sel].T, np.ones(sel.sum())]), r[sel], rcond=None)
        b_mat = sol[:3].T
        if abs(np.linalg.det(b_mat)) < 1e-12:
            break
        basis = np.linalg.inv(b_mat)
    return basis


_COS_PARALLEL = 0.9995


def _parallel_to_any(a, vectors, cos_min=_COS_PARALLEL) -> bool:
    """Whether ``a`` has the direction (or the opposite) of a row of ``vectors``: a multiple of it, or nearly."""
    if not len(vectors):
        return False
    v = np.asarray(vectors, float)
    return bool(np.any(np.abs(v @ a) / (np.linalg.norm(v, axis=1) * np.linalg.norm(a)) > cos_min))


def cell_parameters(basis):
    """``a, b, c`` (Å) and ``α, β, γ`` (°) of a real-space basis (rows)."""
    a, b, c = basis
    la, lb, lc = (float(np.linalg.norm(v)) for v in (a, b, c))

    def ang(u, v):
        return math.degrees(math.acos(float(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))))

    return (la, lb, lc, ang(b, c), ang(a, c), ang(a, b))
