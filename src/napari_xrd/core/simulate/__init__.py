"""Simulated diffraction stills with exact ground truth.

:func:`simulate_still` renders one still from a detector geometry and a
crystal with fixed parameters; :func:`random_still` draws everything
(detector pose, crystal, background style, detector response, anomalies)
for training data; :func:`sample_pilatus_still` is napari's sample image.

Pipeline (expected photons per pixel, then read-out)::

    spots       Ewald prediction -> partiality, Lorentz, polarisation -> Gaussian stamps
    background  air + solvent (+ anomaly rings/arcs/clouds) x polarisation x solid angle
    response    x beamstop shadow x per-module gain -> Poisson -> gain, read noise,
                offset, saturation -> dead/hot pixels, artifacts -> gap/dead markers

Truth (:class:`SimulatedStill`)
    ``spot_mask``: pixels where the noise-free signal of *qualified* spots is
    at least ``spot_mask_sigma`` times the pixel's background noise
    ``sqrt(b + (read_noise/gain)²)`` (photons) and at least
    ``spot_mask_min_photons``; a spot qualifies when its SNR is at least
    ``spot_snr_min`` and its centre is on a good, unshadowed pixel.  Spot
    SNR is ``N / sqrt(N + n_eff (b + σ_read²))`` with ``N`` the recorded
    photons, ``b`` the background at the centre and ``n_eff = 4π sqrt(det C)``
    the effective pixel count of the Gaussian profile with covariance ``C``.
    ``spots``: one row per predicted reflection on the detector (see
    :data:`SPOT_DTYPE`).
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
