"""Per-frame figures for screening: how many spots, how strong, to what resolution.

What a crystallographer reads off each frame of a screening run or a
rotation sweep (the figures ``dials.find_spots`` reports per image): the
spot count, the count off the ice rings, the count at low resolution, the
summed spot intensity over background, and the resolution to which the
spots reach.
"""

from __future__ import annotations

import numpy as np

__all__ = ["frame_statistics", "spot_count_strip", "sweep_highlights", "STATISTICS_FIELDS"]

#: Keys of :func:`frame_statistics`' result.
STATISTICS_FIELDS = ("n_spots", "n_spots_no_ice", "n_spots_4A", "total_intensity", "estimated_d_min")


def frame_statistics(
    table, *, d_min_quantile: float = 0.99, min_spots_for_d_min: int = 10, ice_half_width: float = 0.006
) -> dict:
    """Screening figures of one frame's spots.

    Parameters
    ----------
    table : mapping of (n,) arrays
        A spot table (:func:`~napari_xrd.core.spots.find_spots`' ``table``)
        or any mapping with ``d`` (Å, NaN where unknown), ``intensity`` and,
        optionally, ``background`` (summed counts; NaN or absent: 0) and
        ``beamstop_shadow`` (bool; those spots are not counted).
    d_min_quantile : float
        The resolution limit is that of the spot at this quantile of
        ``1/d`` among the spots off the ice lines: the outermost 1 % are
        left out by default, so that a stray zinger or hot pixel at the
        corner does not set it.
    min_spots_for_d_min : int
        Fewest spots off the ice lines with a resolution for an estimate.
    ice_half_width : float
        For the resolution limit, spots within this distance in ``1/d``
        (Å⁻¹) of an ice line are left out: ice grains scatter farther from
        the lines than ``dials.find_spots``' ring width, and a few grains
        on the 1.92-1.72 Å lines would otherwise set the limit of a frame
        whose crystal stops at 2.5 Å.

    Returns
    -------
    dict
        ``n_spots``; ``n_spots_no_ice`` (not on any ice ring of
        ``dials.find_spots``' fixed width,
        :func:`~napari_xrd.core.spots.ice.ice_ring_spots`); ``n_spots_4A``
        (at d >= 4 Å, where a crystal's spots are strongest and no ice ring
        lies); ``total_intensity`` (summed counts over background, all
        spots); ``estimated_d_min`` (Å; None with too few spots or no
        geometry).
    """
    from napari_xrd.core.spots.ice import ice_line_distance, ice_ring_spots

    if not 0.0 < d_min_quantile <= 1.0:
        raise ValueError(f"d_min_quantile must be in (0, 1], got {d_min_quantile}")
    d = np.asarray(table["d"], dtype=float).ravel()
    n = len(d)
    keep = ~np.asarray(table.get("beamstop_shadow", np.zeros(n, bool)), dtype=bool).ravel()
    intensity = np.asarray(table["intensity"], dtype=float).ravel()
    background = np.asarray(table.get("background", np.zeros(n)), dtype=float).ravel()
    net = np.nan_to_num(intensity - np.nan_to_num(background, nan=0.0), nan=0.0)
    known = keep & np.isfinite(d) & (d > 0)
    with np.errstate(invalid="ignore"):
        off_ice = known & ~ice_ring_spots(np.where(known, d, np.inf))
    stats = {
        "n_spots": int(keep.sum()),
        "n_spots_no_ice": int(off_ice.sum()),
        "n_spots_4A": int((known & (d >= 4.0)).sum()),
        "total_intensity": float(net[keep].sum()),
        "estimated_d_min": None,
    }
    off_lines = known & (ice_line_distance(d) >= ice_half_width)
    if off_lines.sum() >= min_spots_for_d_min:
        s = 1.0 / d[off_lines]
        stats["estimated_d_min"] = float(1.0 / np.quantile(s, d_min_quantile, method="inverted_cdf"))
    return stats


#: bar heights of :func:`spot_count_strip`, lowest first
_BARS = "▁▂▃▄▅▆▇█"


def spot_count_strip(counts, *, width: int = 60) -> str:
    """A one-line bar chart of spots per frame over a sweep (``dials.spot_counts_per_image`` in brief).

    Parameters
    ----------
    counts : (n_frames,) array_like
        Spots found on each frame; NaN for frames not (yet) searched.
    width : int
        Most characters: frames are grouped into at most this many columns,
        each showing its group's largest count.

    Returns
    -------
    str
        One character per column: ``"·"`` where no frame of the group was
        searched, ``" "`` for 0 spots, else a bar from ``"▁"`` to ``"█"`` in
        proportion to the count (the sweep's largest count is a full bar).
    """
    c = np.asarray(counts, dtype=float).ravel()
    if c.size == 0:
        return ""
    edges = np.linspace(0, c.size, min(int(width), c.size) + 1).round().astype(int)
    top = np.nanmax(c) if np.isfinite(c).any() else 0.0
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        group = c[a:b]
        if not np.isfinite(group).any():
            out.append("·")
            continue
        m = np.nanmax(group)
        out.append(" " if m <= 0 else _BARS[min(int(np.ceil(m / top * len(_BARS))) - 1, len(_BARS) - 1)])
    return "".join(out)


def sweep_highlights(statistics) -> str:
    """The busiest and the furthest-reaching frame of a sweep, in words.

    Parameters
    ----------
    statistics : mapping of int to dict
        :func:`frame_statistics` of each searched frame, by frame index.

    Returns
    -------
    str
        ``"most spots: N in frame F"``, and ``"; furthest: D Å in frame G"``
        where a frame has a resolution estimate (the earliest frame wins a
        tie); empty for no frames.
    """
    if not statistics:
        return ""
    busiest = max(statistics, key=lambda f: (statistics[f]["n_spots"], -f))
    text = f"most spots: {statistics[busiest]['n_spots']} in frame {busiest}"
    resolved = [f for f in statistics if statistics[f]["estimated_d_min"] is not None]
    if resolved:
        best = min(resolved, key=lambda f: (statistics[f]["estimated_d_min"], f))
        text += f"; furthest: {statistics[best]['estimated_d_min']:.2f} Å in frame {best}"
    return text
