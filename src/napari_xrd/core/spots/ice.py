"""Ice rings in a spot list: fixed DIALS-style shells, or the shells that are contaminated on this frame.

Ice crystallites in a cryo-cooled sample scatter into the powder lines of
hexagonal ice.  A smooth ice ring is a background feature; a *spotty* one
(few, large grains) is a string of sharp spots that no finder can tell from
Bragg spots by their look alone.  ``dials.find_spots`` drops every spot on
any ice ring (``filter.ice_rings.filter=True``, a fixed width in ``1/d²``),
which costs Bragg spots on frames without ice.  :func:`contaminated_ice_shells`
instead asks the spot list of *this* frame which ice lines carry far more
spots than the resolution around them, and how wide each contaminated shell
is; clean ice lines are left alone.

Resolutions are handled as ``s = 1/d`` (Å⁻¹).  Bragg spots of one frame have
a slowly varying density in ``s`` per detector pixel; ice grains pile up
within a few ring widths of the lines.
"""

from __future__ import annotations

import numpy as np

from napari_xrd.core.display import HEXAGONAL_ICE_D_SPACINGS

__all__ = [
    "ICE_RING_D",
    "ICE_RING_MODES",
    "ice_ring_spots",
    "contaminated_ice_shells",
    "in_shells",
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


def _pixel_exposure(edges, geometry, pixel_mask, stride: int = 4):
    """Valid pixels per ``s`` bin (from every ``stride``-th pixel), or None without a geometry."""
    if geometry is None:
        return None
    n_slow, n_fast = geometry.shape
    ss, fs = np.mgrid[0:n_slow:stride, 0:n_fast:stride]
    if pixel_mask is not None and np.shape(pixel_mask) == (n_slow, n_fast):
        ok = np.asarray(pixel_mask)[::stride, ::stride] == 0
        ss, fs = ss[ok], fs[ok]
    s = _s(geometry.resolution_at(fs.ravel() + 0.5, ss.ravel() + 0.5))
    return np.histogram(s[np.isfinite(s)], edges)[0].astype(float)


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
    lo = lines[0] - reference_half_width - step
    edges = np.arange(lo, lines[-1] + reference_half_width + 2 * step, step)
    centres = 0.5 * (edges[1:] + edges[:-1])
    exposure = _pixel_exposure(edges, geometry, pixel_mask)
    if exposure is None:  # uniform in s over the range the spots cover
        exposure = ((centres >= s.min()) & (centres <= s.max())).astype(float)
    counts = np.histogram(s, edges)[0].astype(float)
    dist = np.abs(centres[:, None] - lines[None, :])
    near_ice = dist.min(axis=1) < max_half_width
    nearest_line = dist.argmin(axis=1)
    shells = []
    for k, sk in enumerate(lines):
        off = np.abs(centres - sk)
        ref = (off < reference_half_width) & ~near_ice
        if exposure[ref].sum() <= 0:
            continue
        rho = counts[ref].sum() / exposure[ref].sum()  # spots per unit exposure
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


def flag_ice_ring_spots(d_spacing, *, mode: str = "auto", geometry=None, pixel_mask=None, width: float = 0.002):
    """Which spots lie on ice rings, by the rule of ``find_spots(ice_rings=mode)``.

    Parameters
    ----------
    d_spacing : (n,) array_like
        Spot resolutions, Å (from any finder).
    mode : {"auto", "filter", "keep"}
        "filter": every ice ring, fixed ``width`` in ``1/d²`` (Å⁻²);
        "auto" and "keep": the shells :func:`contaminated_ice_shells` finds,
        and, on a frame where it finds one, the fixed-``width`` rings of the
        other ice lines as well: crystallites that crowd one line are on the
        others too, in numbers too small to be counted out.
    geometry, pixel_mask : optional
        Passed to :func:`contaminated_ice_shells`.

    Returns
    -------
    on_ice : (n,) bool ndarray
    """
    if mode not in ICE_RING_MODES:
        raise ValueError(f"unknown ice_rings {mode!r}; use one of {', '.join(ICE_RING_MODES)}")
    if mode == "filter":
        return ice_ring_spots(d_spacing, width=width)
    shells = contaminated_ice_shells(d_spacing, geometry=geometry, pixel_mask=pixel_mask)
    on_ice = in_shells(d_spacing, shells)
    if len(shells):
        on_ice |= ice_ring_spots(d_spacing, width=width)
    return on_ice
