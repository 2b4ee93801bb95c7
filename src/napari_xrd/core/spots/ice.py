"""Ice rings in a spot list: fixed DIALS-style shells, or the ice grains of this frame.

Ice crystallites in a cryo-cooled sample scatter into the powder lines of
hexagonal ice.  A smooth ice ring is a background feature; a *spotty* one
(few, large grains) is a string of sharp spots that no finder can tell from
Bragg spots by their look alone.  ``dials.find_spots`` drops every spot on
any ice ring (``filter.ice_rings.filter=True``, a fixed width in ``1/d²``),
which costs Bragg spots on frames without ice.  Here the spot list of *this*
frame decides: :func:`contaminated_ice_shells` asks which ice lines carry far
more spots than the resolution around them (a frame without such a line has
no spotty ice), and :func:`ice_grain_probability` gives each spot the chance
that it is a grain rather than a Bragg spot, from how far it lies from its
line and how crowded each line is.

Resolutions are handled as ``s = 1/d`` (Å⁻¹).  Bragg spots of one frame have
a slowly varying density in ``s`` per detector pixel; ice grains pile up
about the lines, spread by the rings' width.
"""

from __future__ import annotations

import numpy as np

from napari_xrd.core.display import HEXAGONAL_ICE_D_SPACINGS

__all__ = [
    "ICE_RING_D",
    "ICE_RING_MODES",
    "ice_ring_spots",
    "contaminated_ice_shells",
    "ice_grain_probability",
    "spotty_ice_probability",
    "refine_ice_probability",
    "spot_descriptors",
    "in_shells",
    "ice_line_distance",
    "ice_line_band",
    "flag_ice_ring_spots",
]

#: d-spacings (Å) of the strongest powder lines of hexagonal ice (Ih).
ICE_RING_D = tuple(HEXAGONAL_ICE_D_SPACINGS)

#: ``find_spots(ice_rings=...)`` choices.
ICE_RING_MODES = ("auto", "filter", "keep")


def _s(d_spacing) -> np.ndarray:
    d = np.asarray(d_spacing, dtype=float).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / d


def ice_ring_spots(d_spacing, *, width: float = 0.002) -> np.ndarray:
    """True for spots whose resolution lies on any ice ring (fixed width).

    Parameters
    ----------
    d_spacing : (n,) array_like
        Spot resolutions, Å.
    width : float
        Full width of each ice ring in ``1/d²`` (Å⁻²), as ``dials.find_spots``'
        ``filter.ice_rings.width``.

    Returns
    -------
    on_ring : (n,) bool ndarray
    """
    s2 = _s(d_spacing) ** 2
    ice = 1.0 / np.asarray(ICE_RING_D) ** 2
    return np.any(np.abs(s2[:, None] - ice[None, :]) < width / 2.0, axis=1)


def ice_line_distance(d_spacing, *, ice_d=ICE_RING_D) -> np.ndarray:
    """Distance of each spot from the nearest ice line, in ``s = 1/d`` (Å⁻¹).

    Parameters
    ----------
    d_spacing : (n,) array_like
        Spot resolutions, Å.
    ice_d : sequence of float
        Ice-line d-spacings, Å.

    Returns
    -------
    distance : (n,) float ndarray
        ``min_k |1/d - 1/d_k|``; inf where ``d`` is not a positive number.
    """
    s = _s(d_spacing)
    ok = np.isfinite(s) & (s > 0)
    out = np.full(s.shape, np.inf)
    out[ok] = np.abs(s[ok, None] - 1.0 / np.asarray(ice_d, dtype=float)[None, :]).min(axis=1)
    return out


def ice_line_band(geometry, *, margin: float, ice_d=ICE_RING_D, radius=None) -> np.ndarray:
    """The pixels within ``margin`` of an ice line, in ``s = 1/d`` (Å⁻¹).

    Parameters
    ----------
    geometry : DetectorGeometry
    margin : float
        Half width of each band in ``s`` (Å⁻¹).
    ice_d : sequence of float
        Ice-line d-spacings, Å.
    radius : (n_slow, n_fast) ndarray, optional
        ``geometry.equivalent_radius_map()``, if already computed.

    Returns
    -------
    band : (n_slow, n_fast) bool ndarray
        True within a band.  Computed on the equivalent radius (monotonic
        in 2θ), so a tilted detector's ellipses are followed exactly.
    """
    if margin < 0:
        raise ValueError(f"margin must be at least 0, got {margin}")
    r = geometry.equivalent_radius_map() if radius is None else radius
    # s = 2 sin θ / λ; the equivalent radius is distance · tan 2θ / pixel_size
    s_k = 1.0 / np.asarray(ice_d, dtype=float)
    half = np.clip(np.stack([s_k - margin, s_k + margin], axis=1) * geometry.wavelength / 2.0, 0.0, 1.0)
    two_theta = 2.0 * np.arcsin(half)
    with np.errstate(divide="ignore", invalid="ignore"):
        bounds = np.where(two_theta < np.pi / 2, np.tan(two_theta), np.inf) * geometry.distance / geometry.pixel_size
    edges = []  # the bands as disjoint [start, end) intervals of radius, merged where they overlap
    for lo, hi in sorted(map(tuple, bounds)):
        if edges and lo <= edges[-1]:
            edges[-1] = max(edges[-1], hi)
        elif lo < hi:
            edges += [lo, hi]
    return (np.searchsorted(np.asarray(edges, dtype=r.dtype), r, side="right") % 2).astype(bool)


def in_shells(d_spacing, shells) -> np.ndarray:
    """True for spots whose resolution lies in one of ``shells``.

    Parameters
    ----------
    d_spacing : (n,) array_like
        Spot resolutions, Å.
    shells : (m, 2) array_like
        ``(d_max, d_min)`` Å of each shell.

    Returns
    -------
    inside : (n,) bool ndarray
    """
    d = np.asarray(d_spacing, dtype=float).ravel()
    out = np.zeros(d.shape, dtype=bool)
    for d_max, d_min in np.asarray(shells, dtype=float).reshape(-1, 2):
        out |= (d <= d_max) & (d >= d_min)
    return out


#: recent exposures, by everything they depend on: geometry, stride, bin edges and the sampled pixels' validity
#: (find_spots asks twice per frame, a sweep once per frame with the same detector)
_EXPOSURES: dict = {}


def _pixel_exposure(edges, geometry, pixel_mask, stride: int = 4):
    """Valid pixels per ``s`` bin (from every ``stride``-th pixel), or None without a geometry."""
    import hashlib

    if geometry is None:
        return None
    n_slow, n_fast = geometry.shape
    ok = None
    if pixel_mask is not None and np.shape(pixel_mask) == (n_slow, n_fast):
        ok = np.asarray(pixel_mask)[::stride, ::stride] == 0
    edges = np.asarray(edges, dtype=float)
    key = (geometry, stride, edges.tobytes(),
           None if ok is None else hashlib.blake2b(np.packbits(ok).tobytes(), digest_size=16).digest())
    if key in _EXPOSURES:
        return _EXPOSURES[key].copy()
    ss, fs = np.mgrid[0:n_slow:stride, 0:n_fast:stride]
    if ok is not None:
        ss, fs = ss[ok], fs[ok]
    s = _s(geometry.resolution_at(fs.ravel() + 0.5, ss.ravel() + 0.5))
    exposure = np.histogram(s[np.isfinite(s)], edges)[0].astype(float)
    while len(_EXPOSURES) >= 8:
        _EXPOSURES.pop(next(iter(_EXPOSURES)), None)
    _EXPOSURES[key] = exposure.copy()
    return exposure


def _line_histogram(s, lines, geometry, pixel_mask, *, step, max_half_width, reference_half_width):
    """Spots and valid pixels per ``s`` bin about the ice lines, and each line's Bragg-spot density.

    Returns the bin centres, the exposure (valid pixels, or 1 inside the
    spots' own ``s`` range without a geometry) and spot count of each bin,
    and per line the spots per unit exposure in its reference band (within
    ``reference_half_width``, leaving out ``max_half_width`` about every
    line; NaN where the band has no exposure).
    """
    lo = lines[0] - reference_half_width - step
    edges = np.arange(lo, lines[-1] + reference_half_width + 2 * step, step)
    centres = 0.5 * (edges[1:] + edges[:-1])
    exposure = _pixel_exposure(edges, geometry, pixel_mask)
    if exposure is None:  # uniform in s over the range the spots cover
        exposure = ((centres >= s.min()) & (centres <= s.max())).astype(float)
    counts = np.histogram(s, edges)[0].astype(float)
    near_ice = np.abs(centres[:, None] - lines[None, :]).min(axis=1) < max_half_width
    rho = np.full(len(lines), np.nan)
    for k, sk in enumerate(lines):
        ref = (np.abs(centres - sk) < reference_half_width) & ~near_ice
        if exposure[ref].sum() > 0:
            rho[k] = counts[ref].sum() / exposure[ref].sum()
    return centres, exposure, counts, rho


def contaminated_ice_shells(
    d_spacing,
    *,
    geometry=None,
    pixel_mask=None,
    ice_d=ICE_RING_D,
    core_half_width: float = 0.003,
    max_half_width: float = 0.012,
    reference_half_width: float = 0.06,
    min_ratio: float = 3.0,
    min_sigma: float = 4.0,
    min_count: int = 8,
    coverage: float = 0.95,
) -> np.ndarray:
    """The ice-ring shells that are crowded with spots on this frame.

    For each ice line ``s_k = 1/d_k`` the spots within ``core_half_width`` of
    it are counted and compared with the Bragg-spot density in a reference
    band (``reference_half_width`` either side, minus ``max_half_width``
    around every ice line), per valid detector pixel when ``geometry`` is
    given (so corners and gaps do not bias it), else per unit ``s`` within the
    spots' own resolution range.  A line is contaminated when its count is at
    least ``min_count``, at least ``min_ratio`` times the expected count and
    above it by ``min_sigma`` Poisson standard deviations.  Its shell then
    reaches as far from the line (up to ``max_half_width``, and counting only
    spots nearer this line than any other) as it takes to hold ``coverage``
    of the excess spots.

    Parameters
    ----------
    d_spacing : (n,) array_like
        Resolutions (Å) of the spots found on one frame (NaN ignored).
    geometry : DetectorGeometry, optional
        Gives the number of valid pixels per resolution bin.
    pixel_mask : (n_slow, n_fast) array_like, optional
        0 = good pixel (used with ``geometry``).
    ice_d : sequence of float
        Ice-line d-spacings, Å.
    core_half_width, max_half_width, reference_half_width : float
        Half widths in ``s = 1/d`` (Å⁻¹).
    min_ratio, min_sigma : float
        How far above the reference density the core count must be.
    min_count : int
        Fewest spots in the core that can make a line contaminated.
    coverage : float
        Fraction of the excess spots each shell holds.

    Returns
    -------
    shells : (m, 2) float ndarray
        ``(d_max, d_min)`` Å of each contaminated shell, ordered by ice line;
        empty ``(0, 2)`` when none is.
    """
    s = _s(d_spacing)
    s = s[np.isfinite(s) & (s > 0)]
    lines = np.sort(1.0 / np.asarray(ice_d, dtype=float))
    if s.size < min_count:
        return np.zeros((0, 2))
    step = core_half_width / 6.0
    centres, exposure, counts, rho_lines = _line_histogram(
        s, lines, geometry, pixel_mask, step=step, max_half_width=max_half_width,
        reference_half_width=reference_half_width)
    dist = np.abs(centres[:, None] - lines[None, :])
    nearest_line = dist.argmin(axis=1)
    shells = []
    for k, sk in enumerate(lines):
        off = np.abs(centres - sk)
        rho = rho_lines[k]  # spots per unit exposure
        if not np.isfinite(rho):
            continue
        core = off < core_half_width
        n_core, expected = counts[core].sum(), rho * exposure[core].sum()
        significant = n_core > expected + min_sigma * np.sqrt(expected + 1)
        if n_core < min_count or n_core <= min_ratio * expected or not significant:
            continue
        # the excess this line's shell must hold: only bins nearer this line than
        # any other (the lines at 1.95, 1.92, 1.88 and 1.84 Å lie 0.008-0.014
        # Å⁻¹ apart; a neighbour's grains would stretch the shell to its maximum)
        window = (off < max_half_width) & (nearest_line == k)
        order = np.argsort(off[window])
        excess = np.cumsum(counts[window][order] - rho * exposure[window][order])
        reach = off[window][order]
        i = int(np.flatnonzero(excess >= coverage * excess[-1])[0]) if excess[-1] > 0 else 0
        half = float(np.clip(reach[i] + step, core_half_width, max_half_width))
        shells.append((1.0 / max(sk - half, 1e-6), 1.0 / (sk + half)))
    return np.asarray(shells, dtype=float).reshape(-1, 2)


#: Gaussian widths (σ in ``s``, Å⁻¹) that :func:`ice_grain_probability` tries for the grains' spread about a line.
GRAIN_SPREADS = tuple(np.geomspace(2e-4, 6e-3, 25))


def ice_grain_probability(
    d_spacing,
    *,
    geometry=None,
    pixel_mask=None,
    ice_d=ICE_RING_D,
    max_half_width: float = 0.012,
    reference_half_width: float = 0.06,
    step: float = 0.0005,
    spreads=GRAIN_SPREADS,
):
    """The probability that each spot is an ice grain rather than a Bragg spot, from its resolution.

    Near each ice line ``s_k = 1/d_k`` the spots are a mixture of two
    populations.  Bragg spots have the density ``rho_k`` per unit exposure
    (valid pixels) that they have in the reference band about the line;
    grains pile up on the line, ``a_k`` of them per unit exposure spread as
    a Gaussian of width ``σ`` in ``s`` (the powder rings' width and the
    centroids' error; one ``σ`` for all lines, ``a_k >= 0`` for each).  The
    counts of spots in ``step``-wide bins within ``max_half_width`` of the
    lines are Poisson with the sum of both; ``σ`` (from ``spreads``) and the
    ``a_k`` are their maximum-likelihood values.  A spot at ``s`` then is a
    grain with probability ``g / (g + rho_k)``, where
    ``g = a_k · step · N(s - s_k; σ)`` is the grains' density there.  A line
    without an excess of spots gets ``a_k = 0``: its spots stay Bragg spots.

    The model assumes grains, if any: ask :func:`contaminated_ice_shells`
    whether a frame has them first (``flag_ice_ring_spots`` does).  On a
    frame without, a chance cluster of Bragg spots at a line would be read
    as a few grains.

    Parameters
    ----------
    d_spacing : (n,) array_like
        Resolutions (Å) of the spots found on one frame (NaN: probability 0).
    geometry : DetectorGeometry, optional
        Gives the number of valid pixels per resolution bin; without it the
        exposure is uniform in ``s`` over the spots' range.
    pixel_mask : (n_slow, n_fast) array_like, optional
        0 = good pixel (used with ``geometry``).
    ice_d : sequence of float
        Ice-line d-spacings, Å.
    max_half_width, reference_half_width, step : float
        Half width of the window about each line that holds its grains, of
        the band that gives the Bragg density, and the bin width; ``s``, Å⁻¹.
    spreads : sequence of float
        Candidate values of ``σ``, Å⁻¹.

    Returns
    -------
    probability : (n,) float ndarray
        In [0, 1]; 0 for spots farther than ``max_half_width`` from every line.
    spread : float
        The fitted ``σ`` (Å⁻¹); NaN where no line has spots to fit.
    """
    s_all = _s(d_spacing)
    ok = np.isfinite(s_all) & (s_all > 0)
    prob = np.zeros(s_all.shape)
    lines = np.sort(1.0 / np.asarray(ice_d, dtype=float))
    if not ok.any():
        return prob, float("nan")
    s = s_all[ok]
    centres, exposure, counts, rho = _line_histogram(
        s, lines, geometry, pixel_mask, step=step, max_half_width=max_half_width,
        reference_half_width=reference_half_width)
    rho = np.nan_to_num(rho, nan=0.0)
    # each line's window as a (line, offset) grid of bins; bins nearer another line are left out
    half = int(np.ceil(max_half_width / step))
    first = np.searchsorted(centres, lines)
    idx = np.clip(first[:, None] + np.arange(-half - 1, half + 2)[None, :], 0, len(centres) - 1)
    offset = centres[idx] - lines[:, None]
    nearest = np.abs(centres[idx][..., None] - lines[None, None, :]).argmin(axis=-1)
    inside = (np.abs(offset) < max_half_width) & (nearest == np.arange(len(lines))[:, None]) & (exposure[idx] > 0)
    n, e = np.where(inside, counts[idx], 0.0), np.where(inside, exposure[idx], 0.0)
    if n.sum() == 0:
        return prob, float("nan")
    sig = np.asarray(spreads, dtype=float)[:, None, None]
    g = e * step * np.exp(-0.5 * (offset / sig) ** 2) / (sig * np.sqrt(2.0 * np.pi))  # (spread, line, bin)
    b = e * rho[:, None] + 1e-12
    amp = _poisson_amplitude(n, b, g)  # (spread, line)
    lam = b + amp[..., None] * g
    loglik = np.sum(np.where(inside, n * np.log(lam) - lam, 0.0), axis=(1, 2))
    best = int(np.argmax(loglik))
    sigma, a = float(sig[best, 0, 0]), amp[best]
    off = s[:, None] - lines[None, :]
    k = np.abs(off).argmin(axis=1)
    o = off[np.arange(len(s)), k]
    grains = a[k] * step * np.exp(-0.5 * (o / sigma) ** 2) / (sigma * np.sqrt(2.0 * np.pi))
    p = grains / (grains + rho[k] + 1e-300)
    prob[np.flatnonzero(ok)] = np.where(np.abs(o) < max_half_width, p, 0.0)
    return prob, sigma


def _poisson_amplitude(n, b, g, iterations: int = 60):
    """Maximum-likelihood ``a >= 0`` of ``n ~ Poisson(b + a g)`` summed over the last axis (bisection).

    The log-likelihood is concave in ``a``; where its slope at 0 is not
    positive, ``a = 0``.
    """
    g_sum = g.sum(axis=-1)

    def slope(a):
        return np.sum(n * g / (b + a[..., None] * g), axis=-1) - g_sum

    lo = np.zeros(g_sum.shape)
    hi = np.maximum(n.sum(axis=-1) / np.maximum(g_sum, 1e-300), 1.0)  # the slope is negative here
    rising = slope(lo) > 0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        up = slope(mid) > 0
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    return np.where(rising, 0.5 * (lo + hi), 0.0)


def spot_descriptors(table) -> np.ndarray:
    """What each spot looks like, for telling ice grains from Bragg spots on one frame.

    Parameters
    ----------
    table : mapping of column arrays
        A spot table (:func:`~napari_xrd.core.spots.table.spot_table` with a
        geometry): ``intensity``, ``size``, ``sigma_radial`` and
        ``sigma_azimuthal``.

    Returns
    -------
    descriptors : (n, 4) float ndarray
        log10 of the summed counts (at least 1), of the size in pixels, and
        of the radial and azimuthal RMS extents (with the pixel's own 1/12
        px² added); NaN rows where a column is NaN.
    """
    inten = np.asarray(table["intensity"], dtype=float)
    size = np.asarray(table["size"], dtype=float)
    sr = np.asarray(table["sigma_radial"], dtype=float)
    sa = np.asarray(table["sigma_azimuthal"], dtype=float)
    with np.errstate(invalid="ignore"):
        return np.column_stack([
            np.log10(np.maximum(inten, 1.0)),
            np.log10(np.maximum(size, 1.0)),
            0.5 * np.log10(sr**2 + 1.0 / 12.0),
            0.5 * np.log10(sa**2 + 1.0 / 12.0),
        ])


def _gaussian_fit(x, weights, ridge):
    w = weights / weights.sum()
    mu = w @ x
    r = x - mu
    return mu, (w[:, None] * r).T @ r + ridge * np.eye(x.shape[1])


def _gaussian_logpdf(x, mu, cov):
    r = x - mu
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * np.einsum("ij,ij->i", r @ np.linalg.inv(cov), r) - 0.5 * logdet


def refine_ice_probability(
    probability,
    descriptors,
    d_spacing,
    *,
    ice_d=ICE_RING_D,
    max_half_width: float = 0.012,
    reference_range: float = 0.1,
    min_reference: int = 30,
    min_grains: int = 10,
    max_log_ratio: float = float(np.log(1000.0)),
    ridge: float = 0.02,
    iterations: int = 15,
):
    """Grain probabilities from resolution, sharpened by how this frame's grains look.

    Ice grains and Bragg spots of one frame often differ in brightness,
    size and shape (a crystallite's mosaic spread and size are not the
    crystal's), but in no fixed direction.  So both looks are learnt from
    the frame: the Bragg spots' from the spots away from every ice line
    (within ``reference_range`` of the outermost lines), the grains' from
    the spots near the lines weighted by their probability of being grains.
    Each look is a Gaussian in ``descriptors`` (after removing the Bragg
    spots' linear trend with ``s = 1/d``).  A spot's prior odds of being a
    grain (from ``probability``) are multiplied by the ratio of the two
    densities, capped at ``exp(±max_log_ratio)``, and the grains' Gaussian
    is refitted to the new probabilities (expectation-maximisation,
    ``iterations`` rounds).  Where grains and Bragg spots look alike the
    ratio stays near 1 and the resolution decides alone.

    Parameters
    ----------
    probability : (n,) array_like
        Prior grain probability of each spot (``ice_grain_probability``).
    descriptors : (n, m) array_like
        What each spot looks like (:func:`spot_descriptors`); NaN rows keep
        their prior.
    d_spacing : (n,) array_like
        Spot resolutions, Å.
    ice_d : sequence of float
        Ice-line d-spacings, Å.
    max_half_width, reference_range : float
        Spots within ``max_half_width`` of a line (``s``, Å⁻¹) are
        refined; the reference spots lie farther from every line, and
        within ``reference_range`` of the first or last line.
    min_reference, min_grains : int
        Fewest reference spots, and fewest spots with a prior above 0.5,
        needed to learn the two looks; with fewer the prior is returned.
    max_log_ratio : float
        Cap on the log density ratio: what a spot looks like can move its
        odds by at most this much.
    ridge : float
        Added to each covariance's diagonal (descriptor units²).
    iterations : int
        Expectation-maximisation rounds.

    Returns
    -------
    probability : (n,) float ndarray
    """
    prior = np.asarray(probability, dtype=float).ravel()
    x = np.asarray(descriptors, dtype=float).reshape(len(prior), -1)
    s = _s(d_spacing)
    lines = np.sort(1.0 / np.asarray(ice_d, dtype=float))
    ok = np.isfinite(s) & (s > 0) & np.all(np.isfinite(x), axis=1) & np.isfinite(prior)
    near = ok & (ice_line_distance(d_spacing, ice_d=ice_d) < max_half_width)
    ref = ok & ~near & (s > lines[0] - reference_range) & (s < lines[-1] + reference_range)
    out = prior.copy()
    if ref.sum() < min_reference or (prior[near] > 0.5).sum() < min_grains:
        return out
    # the Bragg spots' trend with resolution (fainter, and differently shaped, outwards)
    design = np.column_stack([np.ones(len(s)), np.where(ok, s, 0.0)])
    coef = np.linalg.lstsq(design[ref], x[ref], rcond=None)[0]
    x = x - design @ coef
    # the Bragg look, from the reference spots without their outliers
    xr = x[ref]
    med = np.median(xr, axis=0)
    mad = 1.4826 * np.median(np.abs(xr - med), axis=0)
    inlier = np.all(np.abs(xr - med) < 4.0 * np.maximum(mad, 0.05), axis=1)
    mu_b, cov_b = _gaussian_fit(xr[inlier], np.ones(inlier.sum()), ridge)
    xn = x[near]
    log_b = _gaussian_logpdf(xn, mu_b, cov_b)
    p0 = np.clip(prior[near], 1e-9, 1.0 - 1e-9)
    logit = np.log(p0 / (1.0 - p0))
    r = prior[near]
    for _ in range(iterations):
        mu_g, cov_g = _gaussian_fit(xn, r + 1e-9, ridge)
        ratio = np.clip(_gaussian_logpdf(xn, mu_g, cov_g) - log_b, -max_log_ratio, max_log_ratio)
        r = 1.0 / (1.0 + np.exp(-(logit + ratio)))
    out[near] = r
    return out


def spotty_ice_probability(
    d_spacing, *, geometry=None, pixel_mask=None, descriptors=None, positions=None
) -> np.ndarray:
    """Each spot's probability of being an ice grain, on a frame with spotty ice; 0 on other frames.

    A frame has spotty ice where :func:`contaminated_ice_shells` finds a
    line crowded with spots.  The probabilities then start from the spots'
    resolutions (:func:`ice_grain_probability`); with ``positions`` (and the
    geometry) the odds of each spot near a line are multiplied by how much
    likelier its lying on, or off, the lattice of the frame's other spots
    is for a grain than for a Bragg spot
    (:func:`~napari_xrd.core.spots.lattice_check.lattice_membership`: the
    lattice of the spots away from the lines, or of all spots where that
    one indexes less than half as many of the spots near the lines as of
    its own and the lattice of all indexes its own spots as well); with
    ``descriptors`` they are last refined by what the spots look like
    (:func:`refine_ice_probability`).

    Parameters
    ----------
    d_spacing : (n,) array_like
        Spot resolutions, Å.
    geometry, pixel_mask : optional
        Valid pixels per resolution bin (see :func:`contaminated_ice_shells`).
    descriptors : (n, m) array_like, optional
        What each spot looks like (:func:`spot_descriptors`).
    positions : (n, 2) array_like, optional
        Spot centroids ``(fast, slow)``, pixels (DIALS corner convention).

    Returns
    -------
    probability : (n,) float ndarray
    """
    d = np.asarray(d_spacing, dtype=float).ravel()
    if not len(contaminated_ice_shells(d, geometry=geometry, pixel_mask=pixel_mask)):
        return np.zeros(d.shape)
    p = ice_grain_probability(d, geometry=geometry, pixel_mask=pixel_mask)[0]
    if positions is not None and geometry is not None:
        p = _lattice_odds(p, d, positions, geometry)
    if descriptors is not None:
        p = refine_ice_probability(p, descriptors, d)
    return p


def _lattice_odds(prior, d_spacing, positions, geometry, *, max_half_width: float = 0.012,
                  min_rate: float = 0.02, max_rate: float = 0.98):
    """``prior`` with the odds of spots near the lines multiplied by their lattice likelihood ratio."""
    from napari_xrd.core.spots.lattice_check import lattice_membership

    off = ice_line_distance(d_spacing)
    near = off < max_half_width
    reference = np.isfinite(off) & ~near
    indexed, rate_bragg, rate_chance = lattice_membership(positions, geometry, reference)
    if indexed is None or not rate_bragg > 2.0 * rate_chance:
        return prior
    if near.any() and indexed[near].mean() < 0.5 * rate_bragg:
        # the reference spots' lattice hardly reaches the spots near the lines (few reference spots, or
        # those of a still's low-resolution shells, can leave it ill-defined across shells): index from
        # every spot, and keep that lattice where it indexes the reference spots at least as well
        every, _, chance = lattice_membership(positions, geometry, np.isfinite(off))
        if every is not None and every[reference].mean() >= rate_bragg and every[reference].mean() > 2.0 * chance:
            indexed, rate_bragg, rate_chance = every, float(every[reference].mean()), chance
    rb, rc = np.clip(rate_bragg, min_rate, max_rate), np.clip(rate_chance, min_rate, max_rate)
    # a grain lands on the lattice by chance; a Bragg spot as often as the reference spots do
    ratio = np.where(indexed, rc / rb, (1.0 - rc) / (1.0 - rb))
    p0 = np.clip(prior, 0.0, 1.0)
    odds = p0 / np.maximum(1.0 - p0, 1e-12) * ratio
    return np.where(near, odds / (1.0 + odds), prior)


def flag_ice_ring_spots(
    d_spacing, *, mode: str = "auto", geometry=None, pixel_mask=None, width: float = 0.002, descriptors=None,
    positions=None,
):
    """Which spots lie on ice rings, by the rule of ``find_spots(ice_rings=mode)``.

    Parameters
    ----------
    d_spacing : (n,) array_like
        Spot resolutions, Å (from any finder).
    mode : {"auto", "filter", "keep"}
        "filter": every ice ring, fixed ``width`` in ``1/d²`` (Å⁻²);
        "auto" and "keep": the spots more likely ice grains than Bragg
        spots (:func:`spotty_ice_probability` above 0.5): on a frame with
        spotty ice, on every line; on other frames none.
    geometry, pixel_mask : optional
        Passed to :func:`contaminated_ice_shells` and
        :func:`ice_grain_probability`.
    descriptors : (n, m) array_like, optional
        What each spot looks like (:func:`spot_descriptors`), for "auto" and
        "keep" (:func:`refine_ice_probability`).
    positions : (n, 2) array_like, optional
        Spot centroids ``(fast, slow)``, for "auto" and "keep": whether each
        spot lies on the frame's lattice (see :func:`spotty_ice_probability`).

    Returns
    -------
    on_ice : (n,) bool ndarray
    """
    if mode not in ICE_RING_MODES:
        raise ValueError(f"unknown ice_rings {mode!r}; use one of {', '.join(ICE_RING_MODES)}")
    if mode == "filter":
        return ice_ring_spots(d_spacing, width=width)
    p = spotty_ice_probability(d_spacing, geometry=geometry, pixel_mask=pixel_mask, descriptors=descriptors,
                               positions=positions)
    return p > 0.5
