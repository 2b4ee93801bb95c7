"""Bragg-spot finding: a DIALS-grade dispersion finder and an attention U-Net.

>>> from napari_xrd.core.spots import find_spots
>>> result = find_spots(image, method="dispersion", geometry=geom, pixel_mask=mask)  # doctest: +SKIP
>>> result.labels        # (n_slow, n_fast) int32, 0 = background
>>> result.table["x"]    # fast centroids, DIALS corner convention

Both methods give the same :class:`SpotResult`: a label image (one label per
spot, masked pixels never labelled) and a :class:`~.table.SpotTable`.  With a
geometry, on a frame with spotty ice the spots more likely ice grains than
Bragg spots are dropped by default, or flagged (``ice_rings="keep"``); see
:mod:`napari_xrd.core.spots.ice`.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from napari_xrd.core.spots.dispersion import DIALS_DEFAULTS, dispersion_threshold, label_spots
from napari_xrd.core.spots.ice import (
    ICE_RING_D,
    ICE_RING_MODES,
    contaminated_ice_shells,
    flag_ice_ring_spots,
    ice_ring_spots,
    spot_descriptors,
    spotty_ice_probability,
)
from napari_xrd.core.spots.side_jobs import SideJobs
from napari_xrd.core.spots.significance import spot_significance
from napari_xrd.core.spots.statistics import frame_statistics
from napari_xrd.core.spots.table import SpotTable, spot_table

__all__ = [
    "find_spots",
    "SpotResult",
    "SpotTable",
    "dispersion_threshold",
    "label_spots",
    "spot_table",
    "ice_ring_spots",
    "contaminated_ice_shells",
    "flag_ice_ring_spots",
    "spotty_ice_probability",
    "frame_statistics",
    "METHODS",
    "ICE_RING_D",
    "ICE_RING_MODES",
    "SHADOW_MODES",
    "LARGE_SPOT_MODES",
    "ICE_CONTEXT_MODES",
    "LATTICE_SEARCH_MODES",
]

METHODS = ("dispersion", "unet")
SHADOW_MODES = ("auto", "keep")
LARGE_SPOT_MODES = ("auto", "on", "off")
ICE_CONTEXT_MODES = ("auto", "on", "off")
LATTICE_SEARCH_MODES = ("auto", "off")
#: ``find_spots(method="unet")``'s default ``min_spot_snr``
UNET_MIN_SNR = 2.5


def _two_cores(threads) -> bool:
    """Whether a second core is free for side jobs: more than one, and not one thread asked for."""
    return (os.cpu_count() or 1) > 1 and (threads is None or int(threads) > 1)


def _shadow_input(image, pixel_mask, geometry):
    """The pixels the beamstop search uses, and its options."""
    from napari_xrd.core.masks import valid_pixels

    return valid_pixels(pixel_mask, image=image), {"beam_center": None if geometry is None else geometry.beam_center,
                   "pixel_size": None if geometry is None else geometry.pixel_size}


def _shadow_blocks(image, pixel_mask, geometry):
    from napari_xrd.core.beam_center.beamstop import beamstop_shadow_blocks

    valid, options = _shadow_input(image, pixel_mask, geometry)
    return beamstop_shadow_blocks(image, valid, **options)


def _in_beamstop_shadow(table, image, pixel_mask, geometry, shadow_blocks=None) -> np.ndarray:
    """Which spots have their centroid in the beamstop's shadow."""
    if len(table) == 0:
        return np.zeros(0, dtype=bool)
    from napari_xrd.core.beam_center.beamstop import beamstop_shadow_at

    valid, options = _shadow_input(image, pixel_mask, geometry)
    return beamstop_shadow_at(table.fast_slow(), image, valid, shadow_blocks=shadow_blocks, **options)


class SpotResult(NamedTuple):
    """What :func:`find_spots` returns.

    Attributes
    ----------
    labels : (n_slow, n_fast) int32 ndarray
        0 = background, 1..n = spot number (row ``n - 1`` of ``table``).
    table : SpotTable
        One row per spot (x, y, intensity, background, size, peak, d).
    """

    labels: np.ndarray
    table: SpotTable


def _check_image(image, pixel_mask):
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (n_slow, n_fast), got shape {image.shape}")
    if image.dtype.kind not in "iuf":
        raise ValueError(f"image must hold numbers, got dtype {image.dtype}")
    if pixel_mask is not None and np.shape(pixel_mask) != image.shape:
        raise ValueError(f"pixel_mask shape {np.shape(pixel_mask)} does not match image shape {image.shape}")
    return image


def find_spots(
    image,
    *,
    method: str = "dispersion",
    geometry=None,
    pixel_mask=None,
    algorithm: str = "dispersion_extended",
    kernel_size: int = DIALS_DEFAULTS["kernel_size"],
    gain=DIALS_DEFAULTS["gain"],
    sigma_background: float = DIALS_DEFAULTS["sigma_background"],
    sigma_strong: float = DIALS_DEFAULTS["sigma_strong"],
    min_local: int = DIALS_DEFAULTS["min_local"],
    global_threshold: float = DIALS_DEFAULTS["global_threshold"],
    min_spot_size: int | None = None,
    max_spot_size: int = DIALS_DEFAULTS["max_spot_size"],
    model="default",
    threshold: float = 0.5,
    device="auto",
    batch_size: int | None = None,
    threads: int | None = None,
    precision: str = "auto",
    ice_rings: str = "auto",
    ice_ring_width: float = 0.002,
    beamstop_shadow: str = "auto",
    min_spot_snr: float | None = None,
    ring_background: str = "auto",
    large_spots: str = "auto",
    ice_context: str = "auto",
    lattice_search: str | None = None,
    progress=None,
    cancel=None,
) -> SpotResult:
    """Find Bragg spots in one diffraction image.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        Raw counts.
    method : {"dispersion", "unet"}
        "dispersion": the DIALS threshold algorithm (``algorithm``,
        ``kernel_size``, ``gain``, ``sigma_*``, ``min_local``,
        ``global_threshold`` as in ``dials.find_spots``).  "unet": the
        attention U-Net ``model`` (a name from ``list_models(task="spots")``,
        a path to a card, or "default"), pixels with probability above
        ``threshold``; touching spots with a probability core each, or a
        clear maximum of the counts each, are cut apart
        (:func:`~napari_xrd.core.spots.split.split_touching_spots`,
        :func:`~napari_xrd.core.spots.split.split_at_intensity_peaks`).
    geometry : DetectorGeometry, optional
        Gives each spot's resolution ``d``, and the U-Net the powder rings'
        profile in 2θ as part of its input's background (``ring_background``).
    pixel_mask : (n_slow, n_fast) uint32 array_like, optional
        0 = good pixel; masked pixels never belong to a spot.
    min_spot_size, max_spot_size : int
        Size filter in pixels (default minimum: 3 for dispersion, as DIALS
        for pixel-array detectors; 2 for the U-Net).
    device : str
        "auto", "cpu" or "cuda" (U-Net only).
    batch_size : int, optional
        Tiles per forward pass (U-Net only).
    threads : int, optional
        CPU threads of the U-Net's forward pass (default: torch's setting).
        Unless it is 1 (or the machine has one core), the U-Net's steps that
        need only the frame run in a second thread meanwhile
        (:mod:`~napari_xrd.core.spots.side_jobs`); the spots are the same.
    precision : {"auto", "float32", "mixed"}
        U-Net only: fp16 on CUDA and float32 on the CPU ("auto"), bf16 on
        the CPU too ("mixed"), or float32 everywhere
        (:func:`~napari_xrd.core.spots.inference.predict_spot_probability`).
    ice_rings : {"auto", "filter", "keep"}
        Spots on ice rings (needs ``geometry``; without it nothing is
        flagged or dropped, except that "filter" raises).  "auto": on a
        frame whose spots crowd an ice line (spotty ice;
        :func:`~napari_xrd.core.spots.ice.contaminated_ice_shells`), drop
        the spots more likely ice grains than Bragg spots, judged by their
        resolution (:func:`~napari_xrd.core.spots.ice.ice_grain_probability`),
        whether they lie on the lattice of the frame's other spots
        (:func:`~napari_xrd.core.spots.lattice_check.lattice_membership`)
        and how the frame's grains look unlike its Bragg spots
        (:func:`~napari_xrd.core.spots.ice.refine_ice_probability`); on
        other frames none.  The spots of the lattice search
        (``lattice_search``) are neither judged nor learnt from: its own
        test weighed them against the grains at their resolution.
        "filter": drop spots on every ice ring, a fixed ``ice_ring_width``,
        like ``dials.find_spots filter.ice_rings.filter=True``.  "keep": drop nothing but flag the
        spots that "auto" would drop.
    ice_ring_width : float
        Full width of an ice ring in ``1/d²`` (Å⁻²) for "filter".
    beamstop_shadow : {"auto", "keep"}
        Spots whose centroid lies in the beamstop's shadow, found on the
        frame near the beam centre (``geometry``'s, else the image centre;
        :func:`~napari_xrd.core.beam_center.beamstop.beamstop_shadow_mask`):
        "auto" drops them (scatter leaking round the beamstop is not
        diffraction), "keep" keeps and flags them.
    min_spot_snr : float, optional
        Drop spots whose integrated signal-to-noise ratio over their local
        background (table column ``snr``;
        :func:`~napari_xrd.core.spots.significance.spot_significance`) is
        below this.  Default: 2.5 for the U-Net, which has no photon-counting
        test of its own (chosen on development stills: 3 lost weak Bragg
        spots that 2.5 keeps at a precision cost of about 0.001); none for
        dispersion, whose per-pixel tests are DIALS's.  0 keeps every spot.
    ring_background : {"auto", "on", "off"}
        U-Net with ``geometry`` only: subtract the rings' profile in 2θ with
        the block medians of the input's background where that leaves less
        structure ("auto"), always ("on") or never ("off").  Weak spots on
        narrow water or ice rings are found that the blocks alone hide; it
        needs the geometry's beam centre to a pixel or so
        (:func:`~napari_xrd.core.spots.inference.frame_background`).
    large_spots : {"auto", "on", "off"}
        U-Net only: a second pass on 2 × 2-binned pixels finds large faint
        spots (streaks) that no single pixel shows, and adds those the first
        pass did not touch (:mod:`~napari_xrd.core.spots.coarse`).  "auto":
        on frames whose spots are wide (median RMS extent of 2 px or more;
        needs ``geometry``); "on": always; "off": never.  On a frame with
        spotty ice, none within 0.012 Å⁻¹ (in ``1/d``) of an ice line is
        added: binned grains look like spots to the network.
    ice_context : {"auto", "on", "off"}
        U-Net with ``geometry`` only: a second pass whose channel attention
        leaves the pixels within 0.016 Å⁻¹ of the ice lines out of its
        per-tile statistics, so that bright grains there do not damp the
        network elsewhere in their tiles; away from the lines its
        probability replaces the first pass's
        (:mod:`~napari_xrd.core.spots.ice_context`).  "auto": on frames with
        spotty ice (:func:`~napari_xrd.core.spots.ice.contaminated_ice_shells`
        on the first pass's spots); "on": always; "off": never.
    lattice_search : {"auto", "off"}, optional
        With ``geometry``: where the spots found index as a still's lattice
        (those away from the ice lines), test every position it predicts
        that holds no spot yet, and add the spots there whose counts stand
        out more than chance allows, judged on the frame itself
        (:mod:`~napari_xrd.core.spots.lattice_search`); they are marked in
        the table's ``predicted`` column.  Finds weak spots and spots on
        spotty ice rings that a search of the whole frame must pass over;
        on frames that do not index (rotation frames, few spots) nothing is
        added.  Default: "auto" for the U-Net, "off" for dispersion (the
        DIALS algorithm as it is).
    progress, cancel : callables, optional
        See :mod:`napari_xrd.core.progress`.

    Returns
    -------
    SpotResult
        ``labels`` and ``table``; the table has ``ice_ring`` and
        ``beamstop_shadow`` columns (bool) that mark spots in ice shells and
        in the shadow (all False for dropping modes, whose flagged spots are
        gone), and a ``predicted`` column (bool) that marks the spots found
        at the lattice's predicted positions.
    """
    if ice_rings not in ICE_RING_MODES:
        raise ValueError(f"unknown ice_rings {ice_rings!r}; use one of {', '.join(ICE_RING_MODES)}")
    if beamstop_shadow not in SHADOW_MODES:
        raise ValueError(f"unknown beamstop_shadow {beamstop_shadow!r}; use one of {', '.join(SHADOW_MODES)}")
    if large_spots not in LARGE_SPOT_MODES:
        raise ValueError(f"unknown large_spots {large_spots!r}; use one of {', '.join(LARGE_SPOT_MODES)}")
    if ice_context not in ICE_CONTEXT_MODES:
        raise ValueError(f"unknown ice_context {ice_context!r}; use one of {', '.join(ICE_CONTEXT_MODES)}")
    if lattice_search is None:
        lattice_search = "auto" if method == "unet" else "off"
    if lattice_search not in LATTICE_SEARCH_MODES:
        raise ValueError(f"unknown lattice_search {lattice_search!r}; use one of {', '.join(LATTICE_SEARCH_MODES)}")
    from napari_xrd.core.device import PRECISIONS

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if ice_rings == "filter" and geometry is None:
        raise ValueError("ice_rings='filter' needs the detector geometry")
    image = _check_image(image, pixel_mask)
    # steps that need only the frame run on a second core during the U-Net's serial steps
    jobs = SideJobs(concurrent=method == "unet" and _two_cores(threads))
    if method == "unet":
        jobs.submit("shadow", _shadow_blocks, image, pixel_mask, geometry)
        if large_spots == "on" or large_spots == "auto" and geometry is not None:
            from napari_xrd.core.spots.coarse import binned_input

            jobs.submit("binned", binned_input, image, pixel_mask=pixel_mask, geometry=geometry,
                        ring_background=ring_background)
        from napari_xrd.core.spots.split import smoothed_counts

        jobs.submit("smooth", smoothed_counts, image, pixel_mask=pixel_mask)
    try:
        if method == "dispersion":
            strong = dispersion_threshold(
                image,
                pixel_mask=pixel_mask,
                algorithm=algorithm,
                kernel_size=kernel_size,
                gain=gain,
                sigma_background=sigma_background,
                sigma_strong=sigma_strong,
                min_local=min_local,
                global_threshold=global_threshold,
            )
            min_size = DIALS_DEFAULTS["min_spot_size"] if min_spot_size is None else min_spot_size
        elif method == "unet":
            from napari_xrd.core.spots.inference import predict_spot_probability

            if not 0.0 < threshold < 1.0:
                raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
            probability, background = predict_spot_probability(
                image,
                pixel_mask=pixel_mask,
                model=model,
                device=device,
                batch_size=batch_size,
                threads=threads,
                precision=precision,
                geometry=geometry,
                ring_background=ring_background,
                progress=progress,
                cancel=cancel,
                return_background=True,
            )
            strong = probability > threshold
            min_size = 2 if min_spot_size is None else min_spot_size
        else:
            raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        labels, table = _label(strong, probability if method == "unet" else None, image, geometry=geometry,
                               pixel_mask=pixel_mask, min_size=min_size, max_spot_size=max_spot_size,
                               threshold=threshold, jobs=jobs)
        if method == "unet" and (large_spots != "off" or ice_context != "off"):
            labels, table = _second_looks(labels, table, image, probability, background, geometry=geometry,
                                          pixel_mask=pixel_mask, threshold=threshold, min_size=min_size,
                                          max_spot_size=max_spot_size,
                                          large_spots=large_spots, ice_context=ice_context, model=model,
                                          device=device, batch_size=batch_size, threads=threads, precision=precision,
                                          ring_background=ring_background, cancel=cancel, jobs=jobs)
        table["background"], table["snr"] = spot_significance(labels, image, table, pixel_mask=pixel_mask)
        min_snr = (UNET_MIN_SNR if method == "unet" else None) if min_spot_snr is None else min_spot_snr
        if min_snr is not None and min_snr > 0:
            labels, table = _keep_spots(labels, table, ~(table["snr"] < min_snr))  # NaN (unmeasurable) is kept
        table["predicted"] = np.zeros(len(table), dtype=bool)
        if lattice_search == "auto" and geometry is not None and len(table):
            labels, table = _lattice_search(labels, table, image, geometry=geometry, pixel_mask=pixel_mask,
                                            min_snr=min_snr, workers=2 if _two_cores(threads) else 1)
        if geometry is None:
            on_ice, p_ice = np.zeros(len(table), dtype=bool), np.zeros(len(table))
        else:
            # the rule learns from, and judges, the finder's own spots: the lattice search's test already
            # weighed its spots against the grains at their resolution, and they leave its verdicts as they were
            own = ~table["predicted"]
            p_ice = np.zeros(len(table))
            p_ice[own] = spotty_ice_probability(table["d"][own], geometry=geometry, pixel_mask=pixel_mask,
                                                descriptors=spot_descriptors(table)[own],
                                                positions=table.fast_slow()[own])
            if ice_rings == "filter":
                on_ice = flag_ice_ring_spots(table["d"], mode="filter", width=ice_ring_width)
            else:
                on_ice = p_ice > 0.5
        table["ice_ring"] = on_ice
        table["ice_probability"] = p_ice
        blocks = jobs.result("shadow") if len(table) and "shadow" in jobs else None
        in_shadow = _in_beamstop_shadow(table, image, pixel_mask, geometry, shadow_blocks=blocks)
        table["beamstop_shadow"] = in_shadow
        drop = (on_ice if ice_rings != "keep" else False) | (in_shadow if beamstop_shadow != "keep" else False)
        if np.any(drop):
            labels, table = _keep_spots(labels, table, ~drop)
        return SpotResult(labels, table)
    finally:
        jobs.close()


def _label(strong, probability, image, *, geometry, pixel_mask, min_size, max_spot_size, threshold, jobs=None):
    """Labels and table of a strong-pixel mask; with a U-Net probability, touching spots are cut apart."""
    labels = label_spots(strong, min_spot_size=min_size, max_spot_size=max_spot_size)
    if probability is not None:  # touching spots: one probability core each, or one maximum of the counts each
        from napari_xrd.core.spots.split import split_at_intensity_peaks, split_touching_spots

        labels = split_touching_spots(labels, probability, core_threshold=max(0.9, threshold))
        smooth = jobs.result("smooth") if jobs is not None and "smooth" in jobs else None
        labels = split_at_intensity_peaks(labels, image, pixel_mask=pixel_mask, smooth=smooth)
    return labels, spot_table(labels, image, geometry=geometry)


def _second_looks(labels, table, image, probability, background, *, geometry, pixel_mask, threshold, min_size,
                  max_spot_size, large_spots, ice_context, cancel=None, jobs=None, **predict_options):
    """The U-Net's extra passes (ice context, then binned pixels): labels and table with their spots."""
    from napari_xrd.core.spots.coarse import ICE_GRAIN_MARGIN, coarse_spot_mask, wants_coarse_pass

    # spotty ice, judged on the first pass's spots, where a choice needs it
    needed = geometry is not None and (ice_context == "auto" or large_spots != "off")
    spotty = needed and len(contaminated_ice_shells(table["d"], geometry=geometry, pixel_mask=pixel_mask)) > 0
    if geometry is not None and (ice_context == "on" or ice_context == "auto" and spotty):
        from napari_xrd.core.spots.ice_context import ice_context_probability

        # the first pass's input background serves again (the binned pass computes its own)
        probability = ice_context_probability(image, probability, geometry=geometry, pixel_mask=pixel_mask,
                                              threshold=threshold, cancel=cancel, background=background,
                                              **predict_options)
        labels, table = _label(probability > threshold, probability, image, geometry=geometry,
                               pixel_mask=pixel_mask, min_size=min_size, max_spot_size=max_spot_size,
                               threshold=threshold, jobs=jobs)
    if large_spots == "on" or large_spots == "auto" and wants_coarse_pass(table, geometry=geometry):
        # with spotty ice, binned grains would pass for spots: none is taken near an ice line
        extra = coarse_spot_mask(image, labels > 0, pixel_mask=pixel_mask, geometry=geometry, threshold=threshold,
                                 cancel=cancel, ice_line_margin=ICE_GRAIN_MARGIN if spotty else None,
                                 binned=jobs.result("binned") if jobs is not None and "binned" in jobs else None,
                                 **predict_options)
        extra = label_spots(extra, min_spot_size=min_size, max_spot_size=max_spot_size)
        if extra.any():  # numbered after the first pass's spots: rows stay label order
            labels = np.where(extra > 0, extra + labels.max(), labels).astype(np.int32)
            table = spot_table(labels, image, geometry=geometry)
    return labels, table


def _lattice_search(labels, table, image, *, geometry, pixel_mask, min_snr, workers=1):
    """Labels and table with the spots found where the frame's lattice predicts them (``predicted`` True).

    ``labels`` (spots 1..n, the table's rows, as :func:`_keep_spots` takes them) is written in place (it is
    find_spots' own); nothing full-size is made.
    """
    from napari_xrd.core.spots.coarse import ICE_GRAIN_MARGIN
    from napari_xrd.core.spots.ice import ice_line_distance
    from napari_xrd.core.spots.lattice_search import lattice_spot_search
    from napari_xrd.core.spots.table import spot_table_from_pixels

    off = ice_line_distance(table["d"])
    found = lattice_spot_search(image, table, geometry, exclude=(labels, pixel_mask),
                                reference=~(off < ICE_GRAIN_MARGIN), workers=workers)
    if found is None or not len(found.positions):
        return labels, table
    n_found = len(table)
    parts = []
    for pixels in found.pixels:
        rows, cols = pixels[:, 0], pixels[:, 1]
        free = labels[rows, cols] == 0  # where two predictions' discs overlap, the first keeps its pixels
        if free.any():
            parts.append((rows[free], cols[free]))
            labels[rows[free], cols[free]] = n_found + len(parts)
    if not parts:
        return labels, table
    rows = np.concatenate([r for r, _ in parts])
    cols = np.concatenate([c for _, c in parts])
    number = np.repeat(np.arange(1, len(parts) + 1), [len(r) for r, _ in parts])
    new = spot_table_from_pixels(number, rows, cols, image[rows, cols], geometry=geometry)
    # their significance as every other spot's (the spots found so far keep theirs)
    new["background"], new["snr"] = spot_significance(labels, image, new, pixel_mask=pixel_mask)
    new["predicted"] = np.ones(len(new), dtype=bool)
    table = SpotTable({k: np.concatenate([v, new[k]]) for k, v in table.items()})
    if min_snr is not None and min_snr > 0:
        keep = np.ones(len(table), dtype=bool)
        keep[n_found:] = ~(new["snr"] < min_snr)
        labels, table = _keep_spots(labels, table, keep)
    return labels, table


def _keep_spots(labels, table, keep):
    """Labels and table with only the spots where ``keep`` is True, renumbered 1..n."""
    keep = np.asarray(keep, dtype=bool)
    if keep.all():
        return labels, table
    relabel = np.zeros(len(keep) + 1, dtype=np.int32)
    relabel[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return relabel[labels], SpotTable({k: v[keep] for k, v in table.items()})
