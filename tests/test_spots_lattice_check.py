"""Spots on the frame's lattice: Bragg spots near an ice line are told from grains by indexing the others."""

import numpy as np
import pytest

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.simulate.crystal import random_orientation
from napari_xrd.core.simulate.still import predict_reflections
from napari_xrd.core.spots import ICE_RING_D
from napari_xrd.core.spots.ice import spotty_ice_probability
from napari_xrd.core.spots.lattice_check import lattice_membership


def _still(seed, n_grains=150, centroid_noise=0.15):
    """A 1024² still of a 62 × 78 × 95 Å crystal (2.2 Å), and ice grains spread about the 3.67 Å line."""
    rng = np.random.default_rng(seed)
    geom = DetectorGeometry((1024, 1024), 0.172, 150.0, (512.7, 498.3), 1.0)
    ub = random_orientation(rng) @ np.diag(1.0 / np.array([62.0, 78.0, 95.0]))
    refl = predict_reflections(geom, ub, d_min=2.2, mosaicity_deg=0.3, min_partiality=0.05, margin_px=-5)
    bragg = np.stack([refl["fast"], refl["slow"]], axis=1) + rng.normal(0, centroid_noise, (refl["fast"].size, 2))
    radius = np.array([geom.radius_px_for_d(1.0 / (1.0 / ICE_RING_D[1] + e)) for e in rng.normal(0, 0.002, n_grains)])
    angle = rng.uniform(0, 2 * np.pi, n_grains)
    grains = np.array(geom.beam_center) + radius[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
    xy = np.vstack([bragg, grains])
    is_grain = np.r_[np.zeros(len(bragg), bool), np.ones(n_grains, bool)]
    return geom, xy, is_grain


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bragg_spots_lie_on_the_lattice_of_the_others_and_grains_by_chance(seed):
    geom, xy, is_grain = _still(seed)
    d = geom.resolution_at(xy[:, 0], xy[:, 1])
    near = np.abs(1.0 / d - 1.0 / ICE_RING_D[1]) < 0.012
    indexed, rate_bragg, rate_chance = lattice_membership(xy, geom, ~near)
    assert indexed is not None
    # partial reflections (0.3° mosaic spread) lie off the lattice by their excitation error: not all index
    assert rate_bragg > 0.6 and rate_chance < 0.03
    assert indexed[near & ~is_grain].mean() > 0.75
    assert indexed[is_grain].mean() < 0.05
    # the chance rate is what random places at those resolutions get
    assert abs(indexed[is_grain].mean() - rate_chance) < 0.04


def test_no_lattice_from_too_few_or_unrelated_spots():
    geom, xy, is_grain = _still(0)
    few = np.zeros(len(xy), bool)
    few[:10] = True
    assert lattice_membership(xy, geom, few)[0] is None
    # random spots: indexed no more often than by chance
    rng = np.random.default_rng(3)
    noise = rng.uniform(0, 1024, (300, 2))
    indexed, rate_bragg, rate_chance = lattice_membership(noise, geom, np.ones(300, bool))
    assert indexed is None or rate_bragg < 2 * rate_chance + 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_lattice_spares_bragg_spots_among_the_grains(seed):
    geom, xy, is_grain = _still(seed)
    d = geom.resolution_at(xy[:, 0], xy[:, 1])
    near_bragg = (np.abs(1.0 / d - 1.0 / ICE_RING_D[1]) < 0.004) & ~is_grain
    by_resolution = spotty_ice_probability(d, geometry=geom)
    with_lattice = spotty_ice_probability(d, geometry=geom, positions=xy)
    assert near_bragg.sum() >= 5
    assert (by_resolution[near_bragg] > 0.5).mean() > 0.9  # by resolution alone they are grains
    assert (with_lattice[near_bragg] > 0.5).mean() < 0.35
    assert (with_lattice[is_grain] > 0.5).mean() >= (by_resolution[is_grain] > 0.5).mean() - 0.05
    # and over the whole frame fewer Bragg spots are taken for grains, though a third of them (partial
    # reflections) miss the lattice
    assert (with_lattice[~is_grain] > 0.5).sum() < (by_resolution[~is_grain] > 0.5).sum()
