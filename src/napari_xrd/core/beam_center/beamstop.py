"""The beamstop's shadow: where the direct beam is stopped, hence near the beam centre.

A frame with a flat background and no rings (a still on a clean sample in
vacuum, a spot-only image) holds little else that points at the beam: the
beamstop's disc is then the best evidence.  It sits on the beam to within its
alignment (typically 0.1–0.2 mm), so its centre is a beam-centre estimate
with that uncertainty.

:func:`find_beamstop` finds the darkest round shadow on ~0.3 mm blocks
(photon-significant darkness, gaps and masked pixels left out, never taken
for shadow), takes the deepest point of the largest one (its arm is narrower
than the disc, so it does not attract it), and refines the disc's centre on
full-resolution pixels by fitting a circle to its edge, leaving out the
direction of the arm.  A disc whose centre a module gap hides is found by a
second search in which the gap's blocks count as shadow; its edge is traced
from where each ray leaves the gap.  The traced circle (or the deepest
blocks) then starts a likelihood fit of the disc and its arm to every
pixel's counts (:mod:`.beamstop_fit`), which places faint discs and discs
mostly hidden in a gap, and says how sure it is.
"""

from __future__ import annotations

import math

import numpy as np

from napari_xrd.core.beam_center._common import block_sums

__all__ = ["find_beamstop", "beamstop_shadow_mask", "beamstop_shadow_blocks", "beamstop_shadow_at"]

#: rays (every 4°) on which the disc's edge must be seen for a circle fit: a
#: quarter of the circle, so a disc half hidden by a module gap still counts
MIN_EDGE_POINTS = 20

#: likelihood-ratio z (disc against none) a fitted shadow must reach
MIN_DISC_SIGNIFICANCE = 10.0


def _masked_blur(values, weights, sigma):
    from scipy.ndimage import gaussian_filter

    num = gaussian_filter(values * weights, sigma, mode="nearest", truncate=2.5)
    den = gaussian_filter(weights, sigma, mode="nearest", truncate=2.5)
    return np.where(den > 0.05, num / np.maximum(den, 1e-6), np.nan)


def _block_factor(data, valid, pixel_size) -> int:
    """Block side in pixels: ~0.3 mm, larger on very weak frames so a block holds ~40 photons."""
    factor = max(1, int(round(0.3 / pixel_size))) if pixel_size else max(1, max(data.shape) // 1000)
    # mean, not median: on a weak frame most pixels read 0
    typical = float(np.mean(data[valid][:: max(1, int(valid.sum()) // 200000)])) if valid.any() else 0.0
    if typical > 0:
        factor = max(factor, int(math.ceil(math.sqrt(40.0 / typical))))
    return factor


def _dark_blocks(data, valid, factor):
    return _dark_blocks_from_sums(*block_sums(data, valid, factor), factor)


def _dark_blocks_from_sums(s, n, factor):
    n = n.astype(np.float64)
    ok = n >= 0.5 * factor * factor
    mean = np.where(ok, s / np.maximum(n, 1), 0.0)
    # the local level on 4x coarser blocks, twice: the second time without the
    # darkest blocks, so a large beamstop does not pull its surroundings down
    h, w = mean.shape
    h4, w4 = h // 4, w // 4

    def level_from(use):
        ss = np.where(use, s, 0.0)[: h4 * 4, : w4 * 4].reshape(h4, 4, w4, 4).sum(axis=(1, 3))
        nn = np.where(use, n, 0.0)[: h4 * 4, : w4 * 4].reshape(h4, 4, w4, 4).sum(axis=(1, 3))
        coarse = _masked_blur(np.where(nn > 0, ss / np.maximum(nn, 1), 0.0), (nn > 0).astype(float), 3.0)
        full = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)
        full = np.pad(full, ((0, h - full.shape[0]), (0, w - full.shape[1])), mode="edge")
        return np.where(np.isfinite(full), full, 0.0)

    level = level_from(ok)
    dark = ok & (mean < 0.35 * level)
    level = level_from(ok & ~dark)
    significant = (level - mean) > 5.0 * np.sqrt(np.maximum(level, 1e-9) / np.maximum(n, 1))
    # dark in absolute terms too: next to a bright arc or ring, ordinary
    # background is far below the local level
    typical = float(np.median(mean[ok])) if ok.any() else 0.0
    return ok & (mean < 0.3 * level) & (mean < 0.3 * typical) & significant, level


def _edge_points(data, valid, center, radius, level, arm_angle):
    """Sub-pixel points where the shadow's edge crosses half the level, on rays out of ``center``."""
    from scipy.ndimage import map_coordinates

    angles = np.radians(np.arange(0.0, 360.0, 4.0))
    if arm_angle is not None:
        d = np.angle(np.exp(1j * (angles - arm_angle)))
        angles = angles[np.abs(d) > math.radians(35.0)]
    r = np.linspace(0.3 * radius, 1.8 * radius + 3.0, 60)
    fx = center[0] + np.cos(angles)[:, None] * r[None, :]
    fy = center[1] + np.sin(angles)[:, None] * r[None, :]
    img = np.where(valid, data, np.nan).astype(np.float64)
    # a light blur against photon noise; NaN (masked) spreads and removes its rays
    from scipy.ndimage import uniform_filter

    sm = uniform_filter(np.nan_to_num(img, nan=0.0), 3)
    bad = uniform_filter((~valid).astype(np.float64), 3) > 0
    sm[bad] = np.nan
    prof = map_coordinates(sm, [fy - 0.5, fx - 0.5], order=1, mode="constant", cval=np.nan)
    half = 0.5 * level
    pts = []
    for k in range(len(angles)):
        p = prof[k]
        # the first stretch of measured samples: a ray from a centre hidden in
        # a module gap starts where it leaves the gap
        fin = np.isfinite(p)
        if not fin.any():
            continue
        start = int(np.argmax(fin))
        bad = np.nonzero(~fin[start:])[0]
        p = p[start : start + bad[0]] if bad.size else p[start:]
        above = np.nonzero(p > half)[0]
        if above.size == 0 or above[0] == 0:
            continue  # never leaves the shadow here, or never was in it
        j = above[0]
        t = (half - p[j - 1]) / max(p[j] - p[j - 1], 1e-9)
        rr = r[start + j - 1] + t * (r[start + j] - r[start + j - 1])
        pts.append((center[0] + rr * math.cos(angles[k]), center[1] + rr * math.sin(angles[k])))
    return np.asarray(pts, float).reshape(-1, 2)


def _fit_circle(pts):
    """Algebraic (Kåsa) circle fit with one round of outlier rejection; ((fast, slow), radius, rms)."""
    keep = np.ones(len(pts), bool)
    c = r = None
    res = np.zeros(len(pts))
    for _ in range(2):
        x, y = pts[keep, 0], pts[keep, 1]
        a = np.column_stack([x, y, np.ones_like(x)])
        b = x * x + y * y
        sol, *_ = np.linalg.lstsq(a, b, rcond=None)
        c = (sol[0] / 2, sol[1] / 2)
        r = math.sqrt(max(sol[2] + c[0] ** 2 + c[1] ** 2, 0.0))
        res = np.hypot(pts[:, 0] - c[0], pts[:, 1] - c[1]) - r
        mad = 1.4826 * np.median(np.abs(res[keep])) + 0.1
        keep = np.abs(res) < 3 * mad
        if keep.sum() < 8:
            break
    rms = float(np.sqrt(np.mean(res[keep] ** 2))) if keep.any() else float("inf")
    return c, r, rms, int(keep.sum())


def find_beamstop(
    image, valid, *, pixel_size: float | None = None, near=None, search_radius_px: float | None = None
) -> dict | None:
    """Find the beamstop's round shadow.

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
        One frame, counts.
    valid : (n_slow, n_fast) bool ndarray
        Measured pixels (gaps and masked pixels False).
    pixel_size : float, optional
        mm; sets the block size (~0.3 mm, larger on very weak frames so a
        block holds enough photons to tell shadow from noise).
    near : (fast, slow), optional
        Only shadows whose centre lies within ``search_radius_px`` of this
        point count (dead modules and cold patches elsewhere are dark too).
    search_radius_px : float, optional
        Default: a quarter of the detector's larger side.

    Returns
    -------
    dict or None
        ``beam_center_px`` (fast, slow) of the disc's centre (corner
        convention), ``radius_px``, ``arm_angle_deg`` (direction of the arm
        from the disc, ``atan2(slow, fast)``; None if none is seen),
        ``center_sigma_px`` (1-σ of the disc's centre, pixels), ``fit``
        (``"likelihood"``: :func:`.beamstop_fit.fit_beamstop_shadow`, or
        ``"traced edge"``: a circle through the edge, where the likelihood
        fit did not give a dark disc), its ``significance`` (z), and
        ``edge_points`` and ``edge_rms_px`` of the traced edge.  None when
        no round, photon-significant shadow is found.
    """
    data = np.asarray(image, dtype=np.float32)
    valid = np.asarray(valid, bool)
    factor = _block_factor(data, valid, pixel_size)
    dark, level = _dark_blocks(data, valid, factor)
    if not dark.any():
        return None
    _, n_valid = block_sums(data, valid, factor)
    hidden = n_valid < 0.5 * factor * factor
    if search_radius_px is None:
        search_radius_px = 0.25 * max(data.shape)
    # the disc as seen, and with the blocks in gaps counted as shadow (for a
    # disc whose centre a module gap hides; a candidate still needs dark
    # blocks of its own)
    found = []
    for shadow in (dark, dark | hidden):
        f = _search(data, valid, dark, shadow, hidden, level, factor, near, search_radius_px)
        if f is not None:
            found.append(f)
            if f["center_sigma_px"] < 0.1 * f["radius_px"]:
                break  # a disc pinned this well is no gap's
    # the surer fit: a stretch of arm in a gap (which the second search can
    # take for a disc) is pinned less well than the disc itself
    return min(found, key=lambda f: f["center_sigma_px"]) if found else None


def _search(data, valid, dark, shadow, hidden, level, factor, near, search_radius_px):
    """The deepest round shadows near ``near``, refined in turn; the first clean disc or None."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(shadow)
    depth[hidden & ~ndimage.binary_dilation(dark, iterations=2)] = 0
    h, w = dark.shape
    if near is not None:
        yy, xx = np.ogrid[:h, :w]
        far = ((xx + 0.5) * factor - near[0]) ** 2 + ((yy + 0.5) * factor - near[1]) ** 2 > search_radius_px**2
        depth[far] = 0
    for _ in range(8):
        i, j = np.unravel_index(int(np.argmax(depth)), depth.shape)
        r_blocks = float(depth[i, j])
        if r_blocks < 1.0:
            break
        # the next candidate lies elsewhere
        m = int(3 * r_blocks + 5)
        depth[max(0, i - m): i + m + 1, max(0, j - m): j + m + 1] = 0
        if min(i, j, h - 1 - i, w - 1 - j) < r_blocks + 1:
            continue  # a dark border, not a beamstop
        k = int(math.ceil(r_blocks)) + 1
        if not dark[i, j] and dark[max(0, i - k): i + k + 1, max(0, j - k): j + k + 1].sum() < 1.0 + 0.2 * r_blocks**2:
            continue  # mostly gap: not a shadow we can see
        # the dark component around it (disc and arm), in a window
        m = int(4 * r_blocks + 8)
        i0, j0 = max(0, i - m), max(0, j - m)
        lab, _ = ndimage.label(shadow[i0: i + m + 1, j0: j + m + 1], structure=np.ones((3, 3), bool))
        component = np.zeros(dark.shape, bool)
        component[i0: i + m + 1, j0: j + m + 1] = lab == lab[i - i0, j - j0]
        component &= dark  # the arm is sought among the dark blocks only
        found = _refine(data, valid, component, (i, j), r_blocks, factor, float(level[i, j]))
        if found is not None:
            return found
    return None


def _not_a_disc(fit) -> bool:
    """The likelihood fit, run from a traced edge, says the shadow is no beamstop disc.

    It is barely darker than its surroundings (a corner between a gap and
    the arm's shadow traces as a small circle), or its width is the arm's (a
    stretch of arm).  A traced edge is kept only where the fit failed for
    other reasons (a rough edge, a centre it could not pin).
    """
    if fit is None:
        return False
    arm_like = fit["arm_half_width"] is not None and fit["arm_half_width"] >= 0.8 * fit["radius"]
    return fit["significance"] < 0.5 * MIN_DISC_SIGNIFICANCE or arm_like


def _refine(data, valid, component, ij, r_blocks, factor, level):
    """The disc's centre, radius and arm: a likelihood fit of the whole shadow
    (:func:`.beamstop_fit.fit_beamstop_shadow`), started from a circle through
    its traced edge where that is clean; None if the shadow is not a dark disc."""
    from napari_xrd.core.beam_center.beamstop_fit import fit_beamstop_shadow

    i, j = ij
    radius = r_blocks * factor
    rr, cc = np.nonzero(component)
    dist = np.hypot(rr - i, cc - j)
    ring = (dist > 1.6 * r_blocks) & (dist < 3.0 * r_blocks + 2)
    arm_angle = None
    if ring.sum() >= 2:
        ang = np.arctan2(rr[ring] - i, cc[ring] - j)
        arm_angle = math.atan2(float(np.mean(np.sin(ang))), float(np.mean(np.cos(ang))))
    c = ((j + 0.5) * factor, (i + 0.5) * factor)
    # work on a window around the disc
    half = int(2.5 * radius + 12)
    r0, c0 = max(0, int(c[1]) - half), max(0, int(c[0]) - half)
    win = (slice(r0, int(c[1]) + half), slice(c0, int(c[0]) + half))
    data, valid = data[win], valid[win]
    c = (c[0] - c0, c[1] - r0)
    # the traced edge: a circle through the points where rays leave the shadow
    edge, ce, re_ = None, c, radius
    for _ in range(2):
        pts = _edge_points(data, valid, ce, max(re_, 2.0), level, arm_angle)
        if len(pts) < MIN_EDGE_POINTS:
            break
        c_new, rad_new, rms, n_pts = _fit_circle(pts)
        if not (0.5 * radius < rad_new < 2.5 * radius + 3) or n_pts < MIN_EDGE_POINTS:
            break
        ce, re_ = c_new, rad_new
    else:
        if rms <= max(1.0, 0.1 * re_):
            edge = {"center": ce, "radius": re_, "rms": rms, "n": n_pts}
    start, r_start = (edge["center"], edge["radius"]) if edge else (c, radius)

    def is_disc(fit):
        return (
            fit["significance"] >= MIN_DISC_SIGNIFICANCE
            and fit["floor"] < 0.35 * fit["level"]
            and fit["edge_chi2"] < 2.0
            and 0.5 * radius < fit["radius"] < 3.0 * radius + 5
            # a disc is wider than its arm (else it may be where the arm leaves a gap)
            and (fit["arm_half_width"] is None or fit["arm_half_width"] < 0.8 * fit["radius"])
            and not fit["open_beyond"] < 0.6  # the arm goes on beyond it: a stretch of arm (NaN: not seen)
        )

    fit = fit_beamstop_shadow(data, valid, start, r_start, accept=is_disc)
    fit_ok = fit is not None and is_disc(fit) and fit["center_sigma"] < 3.0 * fit["radius"]
    if fit_ok:
        center, rad, sigma = fit["center"], fit["radius"], fit["center_sigma"]
        if fit["arm_angle"] is not None:
            arm_angle = fit["arm_angle"]
    elif edge is not None and not _not_a_disc(fit):
        center, rad, sigma = edge["center"], edge["radius"], edge["rms"] / math.sqrt(edge["n"])
    else:
        return None
    return {
        "beam_center_px": [float(center[0] + c0), float(center[1] + r0)],
        "radius_px": float(rad),
        "center_sigma_px": float(sigma),
        "arm_angle_deg": None if arm_angle is None else math.degrees(arm_angle),
        "fit": "likelihood" if fit_ok else "traced edge",
        "significance": None if fit is None else float(fit["significance"]),
        "edge_points": int(edge["n"]) if edge else 0,
        "edge_rms_px": float(edge["rms"]) if edge else None,
    }


def beamstop_shadow_mask(image, valid, **options) -> np.ndarray:
    """Pixels in the beamstop's shadow (disc and arm), found from the frame itself.

    :func:`beamstop_shadow_blocks` at every pixel.

    Parameters
    ----------
    image, valid : (n_slow, n_fast) ndarray
        The frame's counts and its measured pixels (bool).
    **options
        ``beam_center``, ``pixel_size``, ``search_radius_px``,
        ``core_fraction``, ``edge_fraction``: see
        :func:`beamstop_shadow_blocks`.

    Returns
    -------
    (n_slow, n_fast) bool ndarray
        True in the shadow (all False when there is none).
    """
    blocks, factor = beamstop_shadow_blocks(image, valid, **options)
    valid = np.asarray(valid, bool)
    out = np.zeros(valid.shape, bool)
    if blocks.any():
        full = np.repeat(np.repeat(blocks, factor, axis=0), factor, axis=1)
        out[: full.shape[0], : full.shape[1]] = full
    return out & valid


def beamstop_shadow_at(fast_slow, image, valid, *, shadow_blocks=None, **options) -> np.ndarray:
    """Whether each point lies in the beamstop's shadow (:func:`beamstop_shadow_mask`).

    The same answer as looking the points up in the mask, without making
    the full-size mask: to flag spots in the shadow.

    Parameters
    ----------
    fast_slow : (n, 2) array_like
        Points, pixels, DIALS corner convention (first pixel's centre at
        (0.5, 0.5)).
    image, valid : (n_slow, n_fast) ndarray
        As for :func:`beamstop_shadow_mask`.
    shadow_blocks : tuple, optional
        :func:`beamstop_shadow_blocks` of this frame, if already computed.
    **options
        Passed to :func:`beamstop_shadow_blocks`.

    Returns
    -------
    (n,) bool ndarray
        False on invalid pixels; a point off the image takes its nearest edge pixel.
    """
    from napari_xrd.core.coords import pixel_index

    valid = np.asarray(valid, bool)
    points = np.asarray(fast_slow, dtype=float).reshape(-1, 2)
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    slow, fast = pixel_index(points, valid.shape)
    blocks, factor = beamstop_shadow_blocks(image, valid, **options) if shadow_blocks is None else shadow_blocks
    by, bx = slow // factor, fast // factor
    inside = (by < blocks.shape[0]) & (bx < blocks.shape[1])
    out = np.zeros(len(points), dtype=bool)
    out[inside] = blocks[by[inside], bx[inside]]
    return out & valid[slow, fast]


def beamstop_shadow_blocks(
    image,
    valid,
    *,
    beam_center=None,
    pixel_size: float | None = None,
    search_radius_px: float | None = None,
    core_fraction: float = 0.3,
    edge_fraction: float = 0.6,
) -> tuple[np.ndarray, int]:
    """The beamstop's shadow (disc and arm) on ~0.3 mm blocks, found from the frame itself.

    XDS leaves pixels whose background is far below that of their
    surroundings out of integration as shadowed (DEFPIX's
    ``VALUE_RANGE_FOR_TRUSTED_DETECTOR_PIXELS``); this is the same idea,
    limited to the shadow near the beam.  On ~0.3 mm blocks: the core is
    photon-significantly dark (below ``core_fraction`` of the local level,
    as :func:`find_beamstop` judges darkness) in a component that comes
    within ``search_radius_px`` of ``beam_center``; it grows by up to 1 mm
    into blocks below ``edge_fraction`` of the level (the penumbra), and
    holes in it no larger than itself (streaks of scatter inside the shadow;
    pockets closed by module gaps) are filled.  Levels are taken above the
    detector's pedestal (the 0.1th percentile of block means: a CCD reads a
    few tens of counts with no photons, so its shadow is not dark in raw
    counts).  Gaps and masked pixels never count as shadow.

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
        One frame, counts.
    valid : (n_slow, n_fast) bool ndarray
        Measured pixels.
    beam_center : (fast, slow), optional
        Pixels, corner convention; default the image centre.  A header's
        value will do: the search radius allows for it being off by mm.
    pixel_size : float, optional
        mm; sets the block size (~0.3 mm) and the default search radius
        (10 mm).
    search_radius_px : float, optional
        Default 10 mm, or a quarter of the larger side without
        ``pixel_size``.
    core_fraction, edge_fraction : float
        Darkness, as a fraction of the local level above the pedestal, of
        the shadow's core and of its edge.

    Returns
    -------
    blocks : (n_slow // factor, n_fast // factor) bool ndarray
        True for blocks in the shadow; block ``(i, j)`` covers pixel rows
        ``i·factor .. (i+1)·factor - 1`` and the same columns.  Pixels of a
        trailing part block are never shadow.
    factor : int
        Block side, pixels.
    """
    from scipy import ndimage

    data = np.asarray(image, dtype=np.float32)
    valid = np.asarray(valid, bool)
    if data.ndim != 2 or valid.shape != data.shape:
        raise ValueError(f"image must be 2-D and valid of the same shape, got {data.shape} and {valid.shape}")
    factor = _block_factor(data, valid, pixel_size)
    out = np.zeros((data.shape[0] // factor, data.shape[1] // factor), bool), factor
    if not valid.any():
        return out
    s, n = block_sums(data, valid, factor)
    ok = n >= 0.5 * factor * factor
    if not ok.any():
        return out
    mean = np.where(ok, s / np.maximum(n, 1), 0.0)
    pedestal = max(float(np.percentile(mean[ok], 0.1)), 0.0)
    dark, level = _dark_blocks_from_sums(s - pedestal * n, n, factor)
    if not dark.any():
        return out
    h, w = dark.shape
    if beam_center is None:
        beam_center = (0.5 * data.shape[1], 0.5 * data.shape[0])
    if search_radius_px is None:
        search_radius_px = 10.0 / pixel_size if pixel_size else 0.25 * max(data.shape)
    yy, xx = np.ogrid[:h, :w]
    near = ((xx + 0.5) * factor - beam_center[0]) ** 2 + ((yy + 0.5) * factor - beam_center[1]) ** 2 <= search_radius_px**2
    eight = np.ones((3, 3), bool)
    lab, n_lab = ndimage.label(dark, structure=eight)
    sizes = np.bincount(lab.ravel(), minlength=n_lab + 1)
    seeds = np.unique(lab[near & dark])
    seeds = seeds[(seeds > 0) & (sizes[seeds] >= 4)]  # a few blocks at least: not a noise dip
    if seeds.size == 0:
        return out
    shadow = np.isin(lab, seeds)
    # the penumbra: blocks below edge_fraction of the level, at most ~1 mm
    # out from the core (a dim neighbour module, or the dip inside a water
    # ring, is not shadow)
    dim = ok & (mean - pedestal < edge_fraction * level)
    for _ in range(max(1, int(round(1.0 / (factor * pixel_size)))) if pixel_size else 3):
        grown = ndimage.binary_dilation(shadow, structure=eight) & dim
        if not (grown & ~shadow).any():
            break
        shadow |= grown
    # holes: scatter inside the shadow, and pockets a module gap closes (the
    # gap next to the shadow only); a hole larger than the shadow itself is a
    # module the shadow and the gaps happen to surround, not a hole
    gap_near = ~ok & ndimage.binary_dilation(shadow, structure=eight, iterations=3)
    holes = ndimage.binary_fill_holes(shadow | gap_near) & ok & ~shadow
    hole_lab, n_holes = ndimage.label(holes, structure=eight)
    if n_holes:
        hole_size = np.bincount(hole_lab.ravel(), minlength=n_holes + 1)
        small = np.flatnonzero(hole_size <= shadow.sum())
        shadow |= np.isin(hole_lab, small[small > 0])
    return shadow, factor
