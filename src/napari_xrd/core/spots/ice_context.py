"""A second U-Net look on frames with spotty ice, blind to the grains' statistics.

The U-Net's channel attention sets the gain of its feature channels from
statistics pooled over each whole 256-pixel tile (average and maximum).
Bright ice grains on a spotty ring dominate those statistics, and the gain
they set damps the channels that find other spots: streaks far from any ice
line are lost in tiles that hold many grains
(``benchmarks/bench_spots_context.py`` measures it).  The grains are real
content of the frame, so they stay in the input; this pass only leaves the
pixels near the ice lines out of the pooled statistics
(``predict_spot_probability(pool_exclusion=...)``), so that every tile is
judged with the gains of a tile without grains.

The network also fires on grains with those gains, so only what this pass
finds away from the ice lines is taken, and only where the first pass found
nothing: the first pass's spots keep their pixels and their labels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ice_context_spot_mask", "ICE_CONTEXT_MARGIN"]

#: half width (Å⁻¹ in ``1/d``) of the bands about the ice lines that the pass leaves out of the attention's
#: statistics and in which it adds nothing: the widest spread of grains the ice rule considers
ICE_CONTEXT_MARGIN = 0.016


def ice_context_spot_mask(image, found, *, geometry, pixel_mask=None, threshold: float = 0.5,
                          margin: float = ICE_CONTEXT_MARGIN, **predict_options) -> np.ndarray:
    """Spots that the U-Net finds away from the ice lines once the lines leave its tile statistics.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        Raw counts.
    found : (n_slow, n_fast) bool array_like
        The first pass's spot pixels; a new spot touching them is not taken.
    geometry : DetectorGeometry
        Places the ice lines.
    pixel_mask : (n_slow, n_fast) array_like, optional
        0 = good pixel.
    threshold : float
        Probability above which a pixel is a spot pixel.
    margin : float
        Half width of the bands about the ice lines, in ``1/d`` (Å⁻¹).
    **predict_options
        Passed to :func:`~napari_xrd.core.spots.inference.predict_spot_probability`
        (model, device, batch_size, threads, ring_background, progress,
        cancel).

    Returns
    -------
    new : (n_slow, n_fast) bool ndarray
        Pixels of the spots found by this pass that lie mostly outside the
        bands within ``margin`` of an ice line and do not touch ``found``;
        never a masked pixel.
    """
    from scipy import ndimage

    from napari_xrd.core.spots.ice import ice_line_band
    from napari_xrd.core.spots.inference import predict_spot_probability

    image = np.asarray(image)
    found = np.asarray(found, dtype=bool)
    if found.shape != image.shape:
        raise ValueError(f"found shape {found.shape} does not match image shape {image.shape}")
    band = ice_line_band(geometry, margin=margin)
    prob = predict_spot_probability(image, pixel_mask=pixel_mask, geometry=geometry, pool_exclusion=band,
                                    **predict_options)
    labels, n = ndimage.label(prob > threshold)
    if n == 0:
        return np.zeros(image.shape, dtype=bool)
    index = np.arange(1, n + 1)
    new = np.zeros(n + 1, dtype=bool)
    # a spot mostly in a band is left to the first pass and the ice rule; one touching a found spot is not new
    new[1:] = ndimage.mean(band, labels, index) < 0.5
    new[np.unique(labels[ndimage.binary_dilation(found) & (labels > 0)])] = False
    return new[labels]
