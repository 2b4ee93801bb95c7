"""A second U-Net look at 2 × 2-binned pixels, for large faint spots.

Spots spread over many pixels (streaks from a mosaic crystal, wide spots at
long wavelength or from a large beam) can be well above their background in
total while no single pixel stands out: the U-Net, which judges pixels in
their neighbourhood, misses some of them.  Summing 2 × 2 pixels halves a
spot's width in pixels and doubles its per-pixel signal-to-noise ratio
(four Poisson counts add up to one), which brings such a spot back to the
sizes and contrasts the network was trained on: the binned frame is what a
detector with pixels twice as large would have recorded.

:func:`coarse_spot_mask` runs the network on the binned frame and returns,
at full resolution, the spots it finds that the full-resolution pass did not
touch.  :func:`wants_coarse_pass` is ``find_spots(large_spots="auto")``'s
choice: frames whose spots are wide.  On a frame with spotty ice the binned
ice grains look like Bragg spots to the network, which has learnt to ignore
them only at full resolution; grains scatter only about the ice lines, so
there the binned spots near a line are left out (``ice_line_margin``) and
the streaks elsewhere kept.
"""

from __future__ import annotations

import numpy as np

from napari_xrd.core.masks import valid_pixels

__all__ = ["bin_frame", "binned_geometry", "binned_input", "coarse_spot_mask", "wants_coarse_pass",
           "WIDE_SPOT_PX", "ICE_GRAIN_MARGIN"]

#: median RMS extent (px, the larger of radial and azimuthal) of a frame's spots above which "auto" bins
WIDE_SPOT_PX = 2.0
#: on a frame with spotty ice, binned spots this close to an ice line in ``1/d`` (Å⁻¹) are left out: the
#: widest spread of grains about a line that the ice rule considers (its shells' ``max_half_width``)
ICE_GRAIN_MARGIN = 0.012


def bin_frame(image, valid, factor: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``factor × factor`` pixels.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        Counts; invalid pixels are not added.
    valid : (n_slow, n_fast) bool array_like
    factor : int

    Returns
    -------
    binned : (n_slow // factor, n_fast // factor) float32 ndarray
        A trailing row or column that does not fill a bin is left out.
    binned_valid : same shape, bool
        True where all the bin's pixels are valid: a bin that is partly gap
        would look like a fainter pixel.
    """
    image = np.asarray(image)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(image)
    ny, nx = (n // factor * factor for n in image.shape)
    counts = np.where(valid, image, 0).astype(np.float32)[:ny, :nx]
    binned = np.zeros((ny // factor, nx // factor), dtype=np.float32)
    whole = np.ones(binned.shape, dtype=bool)
    for dy in range(factor):  # strided adds: a third of the time of a sum over reshaped axes
        for dx in range(factor):
            binned += counts[dy::factor, dx::factor]
            whole &= valid[dy:ny:factor, dx:nx:factor]
    return binned, whole


def binned_geometry(geometry, factor: int = 2):
    """The detector seen with pixels ``factor`` times larger (corner convention: the beam centre scales)."""
    ny, nx = geometry.shape
    fast, slow = geometry.beam_center
    return geometry.replace(shape=(ny // factor, nx // factor), pixel_size=geometry.pixel_size * factor,
                            beam_center=(fast / factor, slow / factor))


def wants_coarse_pass(table, *, geometry=None, wide_px: float = WIDE_SPOT_PX) -> bool:
    """Whether a frame's spots call for the binned pass ("auto").

    Parameters
    ----------
    table : SpotTable
        The full-resolution pass's spots (``sigma_radial`` and
        ``sigma_azimuthal``: they need the geometry).
    geometry : DetectorGeometry, optional
        Without it: False.
    wide_px : float
        The median over spots of the larger of the two RMS extents must
        reach this (px).

    Returns
    -------
    bool
        True for a frame of wide spots (with spotty ice too: see
        ``coarse_spot_mask(ice_line_margin=...)``).
    """
    if geometry is None or len(table) < 5:
        return False
    extent = np.fmax(np.asarray(table["sigma_radial"], float), np.asarray(table["sigma_azimuthal"], float))
    return bool(np.isfinite(extent).any() and np.nanmedian(extent) >= wide_px)


def binned_input(image, *, pixel_mask=None, geometry=None, factor: int = 2, ring_background: str = "auto"):
    """The binned frame as :func:`coarse_spot_mask`'s network sees it.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        Raw counts.
    pixel_mask : (n_slow, n_fast) array_like, optional
        0 = good pixel.
    geometry : DetectorGeometry, optional
        The full frame's; binned for the ring background.
    factor : int
        Binning.
    ring_background : {"auto", "on", "off"}
        As for :func:`~napari_xrd.core.spots.inference.frame_background`.

    Returns
    -------
    binned : (n_slow // factor, n_fast // factor) float32 ndarray
        Summed counts (:func:`bin_frame`).
    binned_valid : same shape, bool ndarray
    background : same shape, float32 ndarray, or None
        The network input's background (Anscombe units;
        :func:`~napari_xrd.core.spots.inference.frame_background` on the
        binned frame and geometry), None without ``geometry``.
    """
    from napari_xrd.core.spots.inference import frame_background

    image = np.asarray(image)
    binned, binned_valid = bin_frame(image, valid_pixels(pixel_mask, image=image), factor)
    background = None
    if geometry is not None:
        background, _ = frame_background(binned, binned_valid, binned_geometry(geometry, factor),
                                         ring_background=ring_background)
    return binned, binned_valid, background


def coarse_spot_mask(image, found, *, pixel_mask=None, geometry=None, threshold: float = 0.5, factor: int = 2,
                     ice_line_margin: float | None = None, binned=None, **predict_options) -> np.ndarray:
    """Spot pixels that only the binned frame shows.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        Raw counts.
    found : (n_slow, n_fast) bool array_like
        The full-resolution pass's spot pixels.
    pixel_mask : (n_slow, n_fast) array_like, optional
        0 = good pixel.
    geometry : DetectorGeometry, optional
        The full frame's; binned for the network's ring background.
    threshold : float
        Probability threshold on the binned frame.
    factor : int
        Binning.
    ice_line_margin : float, optional
        Leave out the binned spots whose centroid lies within this distance
        in ``1/d`` (Å⁻¹) of an ice line (needs ``geometry``): on a frame with
        spotty ice, ``find_spots`` gives :data:`ICE_GRAIN_MARGIN`.
    binned : tuple, optional
        :func:`binned_input` of this frame (same ``pixel_mask``,
        ``geometry``, ``factor`` and ``ring_background``), if already
        computed.
    **predict_options
        Passed to :func:`~napari_xrd.core.spots.inference.predict_spot_probability`
        (``model``, ``device``, ``batch_size``, ``threads``,
        ``ring_background``, ``cancel``).

    Returns
    -------
    (n_slow, n_fast) bool ndarray
        The full-resolution valid pixels of each binned spot that touches no
        pixel of ``found`` (nor a neighbour of one): a spot the first pass
        found keeps its own outline and centroid.
    """
    from scipy import ndimage

    from napari_xrd.core.spots.inference import predict_spot_probability

    image = np.asarray(image)
    if binned is None:
        binned = binned_input(image, pixel_mask=pixel_mask, geometry=geometry, factor=factor,
                              ring_background=predict_options.get("ring_background", "auto"))
    binned, binned_valid, background = binned
    prob = predict_spot_probability(binned, pixel_mask=(~binned_valid).astype(np.uint32),
                                    geometry=None if geometry is None else binned_geometry(geometry, factor),
                                    background=background, **predict_options)
    labels, n = ndimage.label(prob > threshold)
    out = np.zeros(image.shape, dtype=bool)
    if n == 0:
        return out
    # a binned spot is new unless it covers a pixel of ``found`` or a 4-neighbour of one (found's pixels only:
    # nothing full-size is dilated)
    new = np.ones(n + 1, dtype=bool)
    rows, cols = np.nonzero(np.asarray(found, dtype=bool))
    height, width = labels.shape[0] * factor, labels.shape[1] * factor
    for dr, dc in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        new[labels[r[inside] // factor, c[inside] // factor]] = False
    new[0] = False  # background
    if ice_line_margin is not None and geometry is not None:
        from napari_xrd.core.spots.ice import ice_line_distance

        # centroids of the binned counts, at full resolution (corner convention: bin centre (i + 0.5) · factor)
        index = np.arange(1, n + 1)
        slow, fast = (np.asarray(c, float) for c in zip(*ndimage.center_of_mass(binned, labels, index)))
        d = np.atleast_1d(geometry.resolution_at((fast + 0.5) * factor, (slow + 0.5) * factor))
        new[1:] &= ~(ice_line_distance(d) < ice_line_margin)
    # the new spots' full-resolution pixels, the valid ones (finite, not negative, unmasked)
    b_rows, b_cols = np.nonzero(new[labels])
    rows = (b_rows[:, None] * factor + np.repeat(np.arange(factor), factor)[None, :]).ravel()
    cols = (b_cols[:, None] * factor + np.tile(np.arange(factor), factor)[None, :]).ravel()
    ok = valid_pixels(None if pixel_mask is None else np.asarray(pixel_mask)[rows, cols], image=image[rows, cols])
    out[rows[ok], cols[ok]] = True
    return out
