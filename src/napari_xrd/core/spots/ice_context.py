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

The network also fires on grains with those gains, so this pass's
probability is taken only away from the ice lines; near them the first
pass's stays.  Away from the lines it finds streaks that the first pass
missed, and the bright cores of streaks that the first pass left out (which
cut such a streak in two, each half's centroid a few pixels off).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ice_context_probability", "ICE_CONTEXT_MARGIN"]

#: half width (Å⁻¹ in ``1/d``) of the bands about the ice lines that the pass leaves out of the attention's
#: statistics and in which the first pass's probability stays: beyond the ice rule's widest shell (0.012), as
#: grains of a ring with a spread of 0.0034 reach 0.013
ICE_CONTEXT_MARGIN = 0.016


def ice_context_probability(image, probability, *, geometry, pixel_mask=None, threshold: float = 0.5,
                            margin: float = ICE_CONTEXT_MARGIN, **predict_options) -> np.ndarray:
    """The spot probability with the ice lines left out of the network's tile statistics, away from the lines.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        Raw counts.
    probability : (n_slow, n_fast) array_like
        The first pass's probability
        (:func:`~napari_xrd.core.spots.inference.predict_spot_probability`).
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
    probability : (n_slow, n_fast) float32 ndarray
        ``probability`` within ``margin`` of an ice line, where grains are,
        and on every spot (pixels above ``threshold`` in either pass) that
        lies mostly there, so that a grain at a band's edge is judged whole
        as the first pass saw it; elsewhere the second pass's, whose
        channel attention pooled over each tile without those bands.
    """
    from scipy import ndimage

    from napari_xrd.core.spots.ice import ice_line_band
    from napari_xrd.core.spots.inference import predict_spot_probability

    probability = np.asarray(probability, dtype=np.float32)
    if probability.shape != np.shape(image):
        raise ValueError(f"probability shape {probability.shape} does not match image shape {np.shape(image)}")
    band = ice_line_band(geometry, margin=margin)
    context = predict_spot_probability(image, pixel_mask=pixel_mask, geometry=geometry, pool_exclusion=band,
                                       **predict_options)
    keep = band.copy()
    for p in (probability, context):
        labels, n = ndimage.label(p > threshold)
        if n:
            mostly_in_band = np.zeros(n + 1, dtype=bool)
            mostly_in_band[1:] = ndimage.mean(band, labels, np.arange(1, n + 1)) >= 0.5
            keep |= mostly_in_band[labels]
    return np.where(keep, probability, context)
