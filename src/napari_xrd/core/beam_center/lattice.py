"""Beam centre and tilt from the Bragg spots of a still: index, then refine.

A still shows the reciprocal-lattice points ``r = B m`` (``m`` integer) that
lie on the Ewald sphere.  A spot at detector position ``p`` maps, through a
trial geometry, to ``r(p) = (k̂(p) - ŝ0) / λ``.  With the right geometry the
``r`` form a lattice *that contains the origin*; a wrong beam centre
translates them (to first order), which no lattice basis absorbs unless the
translation is itself a lattice vector (see below).  So:

1. **Spots**: bright compact maxima, centroided at full resolution
   (:mod:`.spots`).
2. **Index** without a known cell (:func:`.indexing.index_reciprocal_lattice`): the
   Fourier transform ``F(a) = Σ exp(2πi a·r)`` is large for real-space
   lattice vectors ``a``.  It is searched along many directions with
   histogram FFTs (the 1-D method of Steller, Bolotovsky and Rossmann, 1997),
   the best vectors are refined, and the three that index most spots with
   the smallest cell become the basis.  The phase of ``F`` at each basis
   vector is ``a·t`` for a common translation ``t``, which gives the
   integer indices even when the trial centre is pixels off.
3. **Refine** (:func:`refine_still_geometry`): beam centre, pitch, yaw and the
   nine elements of ``B`` by Levenberg-Marquardt on the spots' detector
   positions.  The prediction is the one of the simulator and of DIALS's
   stills model: ``r`` is turned onto the sphere about the axis normal to
   ``r`` and the beam, so the spot lies at ``2θ = 2 asin(λ|r|/2)`` and at the
   azimuth of ``r``; the excitation error (mosaicity, bandpass) moves no
   spot.  The distance stays at the header's (it trades off with the cell's
   scale).

:func:`lattice_beam_center` runs the three steps.  It needs no radial
background at all, so it answers on flat and spot-only frames; it fails
(returns None) on patterns that do not index (too few spots, several
lattices, powder).

What the lattice does not fix
    Put the beam on the ray of an excited reflection ``-g`` and turn the
    detector by that reflection's 2θ: the spots then index as the same
    lattice shifted by ``g``, and the pattern predicted is the same.  So the
    spots fix the centre only modulo the positions of reflections on the
    Ewald sphere.  A start (the beamstop's disc, a radial fit) decides; an
    alternative within the search radius that is not ruled out (an
    observed spot there cannot be the direct beam; a position on open
    pixels would show the direct beam when the answer itself is hidden in a
    gap or shadow) becomes the answer's uncertainty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from napari_xrd.core.beam_center._common import levenberg_marquardt
from napari_xrd.core.beam_center.indexing import cell_parameters, index_reciprocal_lattice
from napari_xrd.core.beam_center.spots import find_spot_centroids
from napari_xrd.core.geometry import DetectorGeometry

#: rms distance (mm) between spots and their predicted positions above which
#: a lattice fit is rejected; in mm because a still's spots stray from the
#: model by angles (mosaic spread, divergence, bandpass), not by pixels
MAX_RMS_MM = 0.26

__all__ = ["refine_still_geometry", "lattice_beam_center", "LatticeFit"]


@dataclass
class LatticeFit:
    """Result of :func:`lattice_beam_center`.

    Attributes
    ----------
    geometry : DetectorGeometry
        Refined beam centre, pitch and yaw.
    center_sigma_px, tilt_sigma_deg : float
        1σ from the refinement's covariance, scaled by its rms; the centre's
        at least the distance to another centre within the search radius
        that indexes as well (see :func:`lattice_beam_center`).
    rms_px : float
        Rms distance between observed and predicted spots.
    n_spots, n_indexed : int
    reciprocal_basis : (3, 3) ndarray
        ``B``: columns ``a*, b*, c*`` (Å⁻¹), ``r = B m``.
    cell : tuple of float
        ``a, b, c`` (Å), ``α, β, γ`` (°) of the basis found (not reduced).
    """

    geometry: DetectorGeometry
    center_sigma_px: float
    tilt_sigma_deg: float
    rms_px: float
    n_spots: int
    n_indexed: int
    reciprocal_basis: np.ndarray = field(repr=False)
    cell: tuple = ()


def refine_still_geometry(
    spots, indices, geometry: DetectorGeometry, reciprocal_basis, *, fit_tilt: bool = True, max_iter: int = 20
):
    """Least-squares beam centre, tilt and ``B`` from indexed spot positions.

    Parameters
    ----------
    spots : (n, 2) ndarray
        Observed ``(fast, slow)``.
    indices : (n, 3) int ndarray
    geometry : DetectorGeometry
        Start; its distance and wavelength stay fixed.
    reciprocal_basis : (3, 3) ndarray
        Start for ``B`` (columns ``a*, b*, c*``).
    fit_tilt : bool

    Returns
    -------
    geometry : DetectorGeometry
    B : (3, 3) ndarray
    residuals : (n, 2) ndarray
        Observed minus predicted, pixels.
    covariance : (k, k) ndarray
        Of the free parameters ``(fast, slow[, pitch, yaw], B...)``, in
        pixels and degrees.
    """
    spots = np.asarray(spots, float)
    m = np.asarray(indices, float)
    n_geo = 4 if fit_tilt else 2
    p0 = np.concatenate([[*geometry.beam_center, geometry.pitch, geometry.yaw][:n_geo], np.ravel(reciprocal_basis)])
    scale_b = max(float(np.abs(reciprocal_basis).max()), 1e-6)
    unit = np.concatenate([[0.25, 0.25, 0.02, 0.02][:n_geo], np.full(9, 1e-3 * scale_b)])

    def unpack(q):
        p = p0 + q * unit
        g = geometry.replace(beam_center=(p[0], p[1]), **({"pitch": p[2], "yaw": p[3]} if fit_tilt else {}))
        return g, p[n_geo:].reshape(3, 3)

    def fun(q):
        g, b = unpack(q)
        pred = g.still_spot_positions(m @ b.T)
        res = (spots - pred).ravel()
        return np.where(np.isfinite(res), res, 1e3)

    h = 0.1
    dr = h * 1e-3 * scale_b  # Å⁻¹: the step in r that B's step makes for a unit index

    def jacobian(q):
        # geometry by forward differences (the model is smooth: steps of a
        # fortieth of a pixel and 0.002° are exact enough, at half the cost
        # of central ones); B by the chain rule, since the predicted position
        # depends on B only through r = B m (3 derivatives in r instead of 9
        # in B)
        f0 = fun(q)
        cols = [(fun(q + h * e) - f0) / h for e in np.eye(len(q))[:n_geo]]
        g, b = unpack(q)
        r = m @ b.T
        p0 = g.still_spot_positions(r)
        d_pos = [(g.still_spot_positions(r + dr * e) - p0) / dr for e in np.eye(3)]
        d_pos = np.stack(d_pos, axis=-1)  # (n, 2, 3): d(fast, slow)/d r
        # B's element (i, j) moves r_i by m_j: d res/d B_ij = -d pos/d r_i m_j
        d_b = -np.einsum("nki,nj->nkij", d_pos, m).reshape(len(m) * 2, 9) * unit[n_geo:]
        jac = np.column_stack(cols + [d_b])
        return np.where(np.isfinite(jac), jac, 0.0)

    q, jac = levenberg_marquardt(fun, len(p0), max_iter=max_iter, tol=1e-3, h=h, jacobian=jacobian)
    res = fun(q)
    cost = float(res @ res)
    g, b = unpack(q)
    dof = max(len(res) - len(q), 1)
    s2 = cost / dof
    if jac is None:
        return g, b, res.reshape(-1, 2), np.full((len(q), len(q)), np.inf)
    try:
        cov = np.linalg.pinv(jac.T @ jac) * s2
        cov = cov / np.outer(1.0 / unit, 1.0 / unit)
    except np.linalg.LinAlgError:
        cov = np.full((len(q), len(q)), np.inf)
    return g, b, res.reshape(-1, 2), cov


def _origin_candidates(geometry, basis, spots, radius_px, tolerance, max_candidates=5):
    """Beam centres within ``radius_px`` of the geometry's that put the lattice's origin at 0, best first, and their scores.

    The phases ``φ_j`` of ``Σ exp(2πi a_j·r)`` give the lattice's translation
    ``t = A⁻¹(φ + k)`` up to an integer vector ``k``; a centre error ``δ``
    (pixels) translates ``r`` by ``≈ -δ p / (D λ)``.  Each ``k`` whose centre
    lies inside the radius is scored by the fraction of spots that index
    (all ``|a_j·r - round| < tolerance``) with ``r`` recomputed there.
    """
    r = geometry.scattering_vectors(spots[:, 0], spots[:, 1])
    ph = np.angle(np.exp(2j * np.pi * (basis @ r.T)).sum(axis=1)) / (2 * np.pi)
    scale = geometry.distance * geometry.wavelength / geometry.pixel_size  # px per Å⁻¹
    t_max = radius_px / scale
    reach = np.ceil(np.linalg.norm(basis, axis=1) * t_max).astype(int) + 1
    ks = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij"), axis=-1).reshape(-1, 3)
    t = np.linalg.solve(basis, (ph[None, :] + ks).T).T  # (m, 3) translations
    rot = geometry.rotation
    shift = (t @ rot[:, :2]) * scale  # lab x, y -> detector fast, slow (small angles)
    inside = np.hypot(shift[:, 0], shift[:, 1]) <= radius_px
    centres = np.array(geometry.beam_center)[None, :] + shift[inside]
    if len(centres) == 0:
        return [], []
    scores = []
    for c in centres:
        rc = geometry.replace(beam_center=tuple(c)).scattering_vectors(spots[:, 0], spots[:, 1])
        x = basis @ rc.T
        scores.append(float(np.mean(np.all(np.abs(x - np.round(x)) < tolerance, axis=0))))
    out, out_scores = [], []
    for i in np.argsort(scores)[::-1]:
        # translations along the beam barely move the centre: one candidate
        if all(math.hypot(*(centres[i] - c)) > 3.0 for c in out):
            out.append(centres[i])
            out_scores.append(scores[i])
        if len(out) == max_candidates:
            break
    return [tuple(c) for c in out], out_scores


def _refine_lattice(spots, g, basis, sel, *, fit_tilt, tolerance, min_indexed):
    """Index ``spots[sel]`` with ``basis`` at ``g``, then refine and widen to all spots that fit.

    Returns ``(geometry, B, covariance, rms_px, n_used)`` or None.
    """
    fit = None
    for rnd in range(5):
        if rnd == 0:
            r_all = g.scattering_vectors(spots[:, 0], spots[:, 1])
            xa = basis @ r_all.T
            m_all = np.round(xa).T
            ok = sel & np.all(np.abs(xa - m_all.T) < tolerance, axis=0)
            if ok.sum() < min_indexed:
                return None
            # start B from r ≈ B m + t
            A = np.column_stack([m_all[ok], np.ones(ok.sum())])
            sol, *_ = np.linalg.lstsq(A, r_all[ok], rcond=None)
            b_mat = sol[:3].T
        else:
            ok = sel
        # robust: refit without the spots the fit leaves far out
        use = ok.copy()
        g_new, b_new = g, b_mat
        for _ in range(3):
            # (each refit starts where the last ended)
            g_new, b_new, res, cov = refine_still_geometry(spots[use], m_all[use], g_new, b_new, fit_tilt=fit_tilt)
            d = np.hypot(res[:, 0], res[:, 1])
            sigma = max(float(np.median(d)) / 1.1774, 0.05)  # median of a 2-D Gaussian's |d| is 1.1774 σ
            far = d > 3.5 * sigma
            if not far.any() or use.sum() - far.sum() < min_indexed:
                break
            idx = np.flatnonzero(use)
            use[idx[far]] = False
        g, b_mat = g_new, b_new
        rms = float(np.sqrt(np.mean(d**2)))
        # widen to all spots that the refined model predicts well, each with
        # the index (of the 27 about B⁻¹ r) that puts it nearest
        m_all, dist = _nearest_indices(g, b_mat, spots)
        sel_new = dist < max(3.5 * sigma, 0.5)
        fit = (g, b_mat, cov, rms, int(use.sum()))
        if np.array_equal(sel_new, sel):
            break
        sel = sel_new
    return fit


def _hidden(point, valid) -> bool:
    """Whether ``point`` (fast, slow) is off the detector or on an invalid pixel (gap, shadow); True without a map."""
    if valid is None:
        return True
    col, row = int(math.floor(point[0])), int(math.floor(point[1]))
    if not (0 <= row < valid.shape[0] and 0 <= col < valid.shape[1]):
        return True
    r0, c0 = max(row - 2, 0), max(col - 2, 0)
    return not bool(np.all(valid[r0 : row + 3, c0 : col + 3]))


def _lattice_fits(spots, g, radius, *, fit_tilt, max_cell, tolerance, min_indexed, max_rms_px, max_starts,
                  index_two_theta_deg, cancel):
    """Index from ``g``, then refine from each candidate centre; the fits within ``radius`` of the start."""
    from napari_xrd.core.progress import check_cancel

    tt = g.two_theta_at(spots[:, 0], spots[:, 1])
    lim = math.radians(index_two_theta_deg) if index_two_theta_deg else float(np.quantile(tt, 0.6))
    inner = tt <= lim
    if inner.sum() < min_indexed:
        inner = tt <= np.quantile(tt, 0.9)
    r = g.scattering_vectors(spots[inner, 0], spots[inner, 1])
    basis, _, _ = index_reciprocal_lattice(r, max_cell=max_cell, tolerance=tolerance)
    if basis is None:
        return []
    check_cancel(cancel)
    # candidates a little beyond the radius: the phases place the origin only
    # roughly; the refined centre must lie inside
    cands, scores = _origin_candidates(g, basis, spots[inner], radius + 5.0, tolerance, max_candidates=max_starts)
    start = np.array(g.beam_center)
    fits = []
    for c, sc in zip(cands, scores):
        if sc < 0.15 * scores[0]:
            break
        check_cancel(cancel)
        fit = _refine_lattice(spots, g.replace(beam_center=c), basis, inner, fit_tilt=fit_tilt,
                              tolerance=tolerance, min_indexed=min_indexed)
        if fit is not None and fit[3] <= max_rms_px and math.hypot(*(np.array(fit[0].beam_center) - start)) <= radius:
            fits.append(fit)
    return fits


def _on_a_spot(point, spots, within_px: float = 2.5) -> bool:
    """Whether an observed spot lies within ``within_px`` of ``point``."""
    if len(spots) == 0:
        return False
    return bool(np.min(np.hypot(spots[:, 0] - point[0], spots[:, 1] - point[1])) < within_px)


def _excited_reflections(geometry, b_mat, spots, rms, centre, radius_px):
    """Predicted positions of reflections near the Ewald sphere within ``radius_px`` of ``centre``.

    "Near" is within 1.5 × the 95th percentile of the indexed spots'
    excitation errors ``|s0 + r| - 1/λ``.

    Returns
    -------
    positions : (k, 2) ndarray
    """
    lam = geometry.wavelength
    s0 = np.array([0.0, 0.0, 1.0 / lam])
    m_sp, dist = _nearest_indices(geometry, b_mat, spots)
    ok = dist < max(1.0, 3.0 * rms)
    if ok.sum() < 3:
        return np.empty((0, 2))
    eps = np.linalg.norm(m_sp[ok] @ b_mat.T + s0, axis=1) - 1.0 / lam
    eps_max = 1.5 * float(np.quantile(np.abs(eps), 0.95))
    c = np.asarray(centre, float)
    reach_px = radius_px + math.hypot(*(c - np.array(geometry.beam_center)))
    r_lim = 1.2 * reach_px * geometry.pixel_size / (geometry.distance * lam)
    real = np.linalg.inv(b_mat)  # rows: real-space axes
    lim = np.ceil(np.linalg.norm(real, axis=1) * r_lim).astype(int)
    if np.prod(2 * lim + 1) > 200_000:
        return np.empty((0, 2))
    m = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in lim], indexing="ij"), axis=-1).reshape(-1, 3)
    m = m[np.any(m != 0, axis=1)]
    r = m @ b_mat.T
    r = r[(np.linalg.norm(r, axis=1) <= r_lim) & (np.abs(np.linalg.norm(r + s0, axis=1) - 1.0 / lam) <= eps_max)]
    if len(r) == 0:
        return np.empty((0, 2))
    pos = geometry.still_spot_positions(r)
    pos = pos[np.all(np.isfinite(pos), axis=1)]
    return pos[np.hypot(*(pos - c).T) <= radius_px]


def _nearest_indices(geometry, b_mat, spots):
    """For each spot, the index among the 27 about ``round(B⁻¹ r)`` whose prediction lies nearest; and that distance."""
    r = geometry.scattering_vectors(spots[:, 0], spots[:, 1])
    m0 = np.round(np.linalg.solve(b_mat, r.T).T)
    shifts = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], float)
    m = m0[:, None, :] + shifts[None]  # (n, 27, 3)
    pred = geometry.still_spot_positions(m.reshape(-1, 3) @ b_mat.T).reshape(len(spots), 27, 2)
    d = np.hypot(*(spots[:, None, :] - pred).transpose(2, 0, 1))
    d = np.where(np.isfinite(d), d, np.inf)
    best = np.argmin(d, axis=1)
    return m[np.arange(len(spots)), best], d[np.arange(len(spots)), best]


def lattice_beam_center(
    image,
    valid,
    geometry: DetectorGeometry,
    *,
    spots=None,
    fit_tilt: bool = True,
    max_cell: float = 250.0,
    min_indexed: int = 20,
    min_fraction: float = 0.15,
    max_rms_px: float | None = None,
    tolerance: float = 0.15,
    index_two_theta_deg: float | None = None,
    search_radius_px: float | None = None,
    max_starts: int = 5,
    tilt_search_deg: float = 0.0,
    cancel=None,
) -> LatticeFit | None:
    """Beam centre and tilt from a still's Bragg spots (index, then refine).

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
    valid : (n_slow, n_fast) bool ndarray
        Pixels to use (gaps, dead pixels and the beamstop's shadow excluded).
        Also tells where the beam could hide: a centre that the lattice
        allows on open pixels, with no direct beam there, is not counted as
        an alternative.
    geometry : DetectorGeometry
        Start: beam centre within a few pixels (a beamstop's disc, a weak
        radial fit), tilt within a degree or so; distance and wavelength
        are kept.
    spots : (n, 2) ndarray, optional
        Spot centroids ``(fast, slow)`` (corner convention); found with
        :func:`napari_xrd.core.beam_center.spots.find_spot_centroids`
        otherwise.
    fit_tilt : bool
    max_cell : float
        Longest real-space cell edge searched, Å.
    min_indexed, min_fraction : int, float
        The fit is returned only when at least this many spots, and this
        fraction of them, are indexed by one lattice.
    max_rms_px : float, optional
        Largest rms of the spots about their predictions for a fit to count
        (default ``MAX_RMS_MM`` in pixels).
    index_two_theta_deg : float, optional
        Index first on spots inside this 2θ (where a wrong tilt moves spots
        least); all spots join the refinement.  Default: the inner 60% of the
        spots' 2θ range.
    search_radius_px : float, optional
        How far from the start the beam centre may be (default 3 mm).  The
        centres within it that bring the lattice's origin onto the beam are
        refined (at most ``max_starts``, best indexed first); of equally good
        fits the one nearest the start is returned, and the distance to the
        next becomes the centre's uncertainty.
    max_starts : int
    tilt_search_deg : float
        When the start's tilt is unknown: if nothing indexes from it, pitch
        and yaw offsets of ± this are tried in turn.
    cancel : callable, optional

    Returns
    -------
    LatticeFit or None
    """
    from napari_xrd.core.progress import check_cancel

    if spots is None:
        spots = find_spot_centroids(image, valid)
    spots = np.asarray(spots, float).reshape(-1, 2)
    n = len(spots)
    if n < min_indexed:
        return None
    check_cancel(cancel)
    # the lattice's origin must be the beam.  That fixes the centre only
    # modulo the reciprocal-lattice points on the Ewald sphere: with the beam
    # moved onto the ray of an excited reflection -g (and the detector turned
    # by its 2θ), the spots index as the same lattice shifted by g, and the
    # pattern predicted is the same.  The start decides between such
    # candidates; one too close to call makes the answer ambiguous.
    g = geometry
    radius = search_radius_px if search_radius_px is not None else 3.0 / g.pixel_size
    if max_rms_px is None:
        max_rms_px = MAX_RMS_MM / g.pixel_size
    start = np.array(g.beam_center)
    tilts = [(g.pitch, g.yaw)]
    if tilt_search_deg > 0:
        # where the start's tilt is unknown: a wrong one distorts wide-angle
        # spots beyond indexing, so other starting tilts are tried in turn
        # (a start's tilt from a weak radial fit can be degrees off: the
        # untilted detector is tried next)
        t = tilt_search_deg
        if g.pitch != 0 or g.yaw != 0:
            tilts.append((0.0, 0.0))
        tilts += [(g.pitch + t, g.yaw), (g.pitch - t, g.yaw), (g.pitch, g.yaw + t), (g.pitch, g.yaw - t)]
    fits = []
    for pitch, yaw in tilts:
        check_cancel(cancel)
        fits = _lattice_fits(spots, g.replace(pitch=pitch, yaw=yaw), radius, fit_tilt=fit_tilt, max_cell=max_cell,
                             tolerance=tolerance, min_indexed=min_indexed, max_rms_px=max_rms_px,
                             max_starts=max_starts, index_two_theta_deg=index_two_theta_deg, cancel=cancel)
        if fits:
            break
    if not fits:
        return None
    # equally good fits (as many spots, rms within 25%): the one nearest the
    # start whose centre is not on an observed spot (under the alternative
    # that puts the beam on reflection -g's ray, -g's spot would be the
    # direct beam: an ordinary Bragg spot cannot be)
    n_best = max(f[4] for f in fits)
    rms_best = min(f[3] for f in fits if f[4] >= 0.9 * n_best)
    good = [f for f in fits if f[4] >= 0.9 * n_best and f[3] <= 1.25 * rms_best]
    good.sort(key=lambda f: (_on_a_spot(f[0].beam_center, spots), math.hypot(*(np.array(f[0].beam_center) - start))))
    g, b_mat, cov, rms, n_ok = good[0]
    if n_ok < max(min_indexed, min_fraction * n):
        return None
    c_fit = np.array(g.beam_center)
    # the other centres this lattice allows within the search: its excited
    # reflections whose spots are not seen (hidden in a gap or behind the
    # beamstop, or too weak), and the other equally good fits
    alts = [np.array(f[0].beam_center) for f in good[1:] if not _on_a_spot(f[0].beam_center, spots)]
    # (when the answer lies in a gap or a shadow, a reflection left unseen on
    # open pixels is no alternative: the direct beam would show there)
    hidden_answer = _hidden(c_fit, valid)
    alts += [p for p in _excited_reflections(g, b_mat, spots, rms, start, radius)
             if not _on_a_spot(p, spots) and (_hidden(p, valid) or not hidden_answer)]
    others = [d for d in (math.hypot(*(a - c_fit)) for a in alts) if d > 3.0]
    ambiguity = min(others) if others else 0.0
    if _on_a_spot(c_fit, spots):
        ambiguity = max(ambiguity, radius)
    c_sig = max(float(math.sqrt(max(cov[0, 0], 0) + max(cov[1, 1], 0))), ambiguity)
    t_sig = float(math.sqrt(max(cov[2, 2], cov[3, 3], 0))) if fit_tilt else float("nan")
    return LatticeFit(
        geometry=g, center_sigma_px=c_sig, tilt_sigma_deg=t_sig, rms_px=rms, n_spots=n, n_indexed=n_ok,
        reciprocal_basis=b_mat, cell=cell_parameters(np.linalg.inv(b_mat)),
    )
