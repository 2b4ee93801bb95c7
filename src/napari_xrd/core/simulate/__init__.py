"""Simulated diffraction images with exact ground truth.

:func:`simulate_still` renders one image from a detector geometry and a
crystal with fixed parameters (a still, or a rotation image with
``oscillation_deg > 0``); :func:`random_still` draws everything (detector
pose, crystal, background style, detector response, anomalies) for training
data; :func:`sample_pilatus_still` is napari's sample image;
:func:`~napari_xrd.core.simulate.generate.write_simulated_dataset` fills a
:mod:`napari_xrd.core.dataset` on all cores.

Pipeline (expected photons per pixel, then read-out)::

    spots       Ewald prediction -> partiality, Lorentz, polarisation -> Gaussian stamps
    background  air + solvent (+ anomaly rings/arcs/clouds) x polarisation x solid angle
    response    x beamstop shadow x per-module gain -> Poisson -> CCD noise spread, gain,
                read noise, offset, saturation -> dead/hot pixels, artifacts -> gap/dead markers

Truth (:class:`SimulatedStill`)
    ``spot_mask``: pixels where the noise-free signal of *qualified* spots is
    at least ``spot_mask_sigma`` times the pixel's background noise
    ``sqrt(b·f + (read_noise/gain)²)`` (photons; ``f < 1`` when a CCD spreads
    the noise, ``ccd_psf_px``) and at least ``spot_mask_min_photons``, and
    each qualified spot's core (its pixels at half its peak or more, and at
    least ``spot_mask_min_photons``): a weak streak has no pixel above the
    noise, yet it is a spot; a spot
    qualifies when its SNR is at least ``spot_snr_min`` and its centre is on
    a good, unshadowed pixel.  Spot SNR is ``N / sqrt(N + n_eff (b +
    σ_read²))`` with ``N`` the recorded photons, ``b`` the background at the
    centre and ``n_eff = 4π sqrt(det C)`` the effective pixel count of the
    Gaussian profile with covariance ``C``.
    ``spots``: one row per predicted reflection on the detector (see
    :data:`SPOT_DTYPE`), including those in gaps or the beamstop shadow
    (``in_mask`` False).
    ``anomaly_labels``: classes injected *and* visible (see
    :mod:`~napari_xrd.core.simulate.anomalies`).
    ``params``: everything :func:`simulate_from_params` needs to regenerate
    the image bit for bit.
"""

from __future__ import annotations

from napari_xrd.core.simulate.anomalies import ANOMALY_CLASSES, ICE_RINGS
from napari_xrd.core.simulate.crystal import (
    COMMON_CRYSTALS,
    Crystal,
    common_crystal,
    random_crystal,
    random_orientation,
)
from napari_xrd.core.simulate.pipeline import (
    DEFAULT_PARAMS,
    GENERATOR_VERSION,
    SPOT_DTYPE,
    SimulatedStill,
    simulate_from_params,
    simulate_still,
)
from napari_xrd.core.simulate.randomize import random_still, sample_pilatus_still

__all__ = [
    "ANOMALY_CLASSES",
    "COMMON_CRYSTALS",
    "DEFAULT_PARAMS",
    "GENERATOR_VERSION",
    "ICE_RINGS",
    "SPOT_DTYPE",
    "Crystal",
    "SimulatedStill",
    "common_crystal",
    "random_crystal",
    "random_orientation",
    "simulate_still",
    "simulate_from_params",
    "random_still",
    "sample_pilatus_still",
]
