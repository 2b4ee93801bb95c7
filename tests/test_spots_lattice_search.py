"""Spots at the positions the still's own lattice predicts: prediction, the aperture test, the search."""

import numpy as np
import pytest
from scipy import stats

from napari_xrd.core.geometry import DetectorGeometry, lattice_points_near_sphere
from napari_xrd.core.simulate import random_still
from napari_xrd.core.simulate.crystal import random_orientation
from napari_xrd.core.simulate.still import predict_reflections
from napari_xrd.core.spots import find_spots
from napari_xrd.core.spots.lattice_check import FrameLattice, frame_lattice
from napari_xrd.core.spots.lattice_search import (
    aperture_significance,
    excitation_error,
    expected_chance_passes,
    lattice_spot_search,
    poisson_z,
    predict_still_spots,
)
from napari_xrd.core.spots.metrics import match_spots
from napari_xrd.core.spots.table import SpotTable


def _geometry():
    return DetectorGeometry((1024, 1024), 0.172, 150.0, (512.7, 498.3), 1.0)


def _ub(seed):
    return random_orientation(np.random.default_rng(seed)) @ np.diag(1.0 / np.array([62.0, 78.0, 95.0]))


@pytest.mark.parametrize("seed", [0, 1])
def test_predictions_are_where_the_simulator_puts_the_reflections(seed):
    geom, ub = _geometry(), _ub(seed)
    refl = predict_reflections(geom, ub, d_min=2.2, mosaicity_deg=0.3, min_partiality=0.05, margin_px=-1)
    lattice = FrameLattice(np.linalg.inv(ub), np.zeros(3))
    rel = np.abs(refl["excitation_error"]) / np.linalg.norm(refl["r"], axis=1)
    tol = 0.01
    xy, hkl = predict_still_spots(lattice, geom, max_excitation=tol, d_min=2.2)
    expected = rel <= tol
    assert expected.sum() > 50
    # every reflection within the tolerance is predicted, at its place, with its indices
    for (f, s), h in zip(np.column_stack([refl["fast"], refl["slow"]])[expected], refl["hkl"][expected]):
        k = np.flatnonzero(np.all(hkl == h, axis=1))
        assert len(k) == 1
        assert np.allclose(xy[k[0]], (f, s), atol=1e-6)
    # and nothing beyond it
    r = lattice.points(hkl)
    assert np.all(np.abs(excitation_error(r, geom.wavelength)) <= tol * np.linalg.norm(r, axis=1) + 1e-12)


def test_lattice_points_near_sphere_follow_a_translated_lattice():
    ub = _ub(2)
    offset = np.array([0.2, -0.1, 0.3])
    hkl, r = lattice_points_near_sphere(ub, 1.0, r_max=0.45, half_width=0.002, offset=offset)
    assert len(hkl) > 100
    assert np.allclose(r, (hkl + offset) @ ub.T)
    assert np.all(np.abs(excitation_error(r, 1.0)) <= 0.002 + 1e-12)
    assert np.all(np.linalg.norm(r, axis=1) <= 0.45)
    # the same points as a brute-force search of the lattice
    n = np.arange(-40, 41)
    grid = np.stack(np.meshgrid(n, n, n, indexing="ij"), -1).reshape(-1, 3)
    rr = (grid + offset) @ ub.T
    want = (np.abs(excitation_error(rr, 1.0)) <= 0.002) & (np.linalg.norm(rr, axis=1) <= 0.45)
    assert {tuple(h) for h in grid[want]} == {tuple(h) for h in hkl}


def test_poisson_z_is_the_poisson_tail():
    # 4 counts on a background of mean 0.8: P(N >= 4) = 0.00908
    z = poisson_z(np.array([4.0 - 0.8]), np.array([0.8]))[0]
    assert z == pytest.approx(stats.norm.isf(stats.poisson.sf(3, 0.8)), abs=1e-6)
    # a large background: the normal tail
    assert poisson_z(np.array([300.0]), np.array([10000.0]))[0] == pytest.approx(3.0, abs=0.05)
    assert np.isnan(poisson_z(np.array([np.nan]), np.array([1.0]))[0])


def test_aperture_test_follows_a_ring_and_sees_a_spot():
    rng = np.random.default_rng(4)
    geom = _geometry()
    fast, slow = geom.pixel_centers()
    radius_px = np.hypot(fast - geom.beam_center[0], slow - geom.beam_center[1])
    # a narrow bright powder ring (sigma 1.5 px) on a faint background: photon counts
    mean = 0.3 + 40.0 * np.exp(-0.5 * ((radius_px - 300.0) / 1.5) ** 2)
    image = rng.poisson(mean).astype(np.float64)
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    on_ring = np.array(geom.beam_center) + (300.0 + rng.uniform(-2, 2, 200))[:, None] * np.column_stack(
        [np.cos(angles), np.sin(angles)])
    z, net, offset, _ = aperture_significance(image, on_ring, geom, radius=2.0)
    ok = np.isfinite(z)
    assert ok.sum() > 150
    # the ring's profile is the background: chance passes as for noise, not a ring's worth of "spots"
    assert np.mean(z[ok] > 3.0) < 0.03
    assert abs(np.median(net[ok])) < 0.1 * 40.0
    # a spot of 200 photons (sigma 1 px) on the ring is seen, centred on its position
    spot = on_ring[7]
    yy, xx = np.mgrid[-4:5, -4:5]
    cx, cy = int(spot[0]), int(spot[1])
    image[cy - 4:cy + 5, cx - 4:cx + 5] += rng.poisson(
        200.0 * np.exp(-0.5 * ((xx + cx + 0.5 - spot[0]) ** 2 + (yy + cy + 0.5 - spot[1]) ** 2)) / (2 * np.pi))
    z2, _, offset2, pixels = aperture_significance(image, spot[None], geom, radius=2.0)
    assert z2[0] > 5.0
    assert offset2[0] < 0.6
    assert len(pixels[0]) >= 3



def test_aperture_figures_depend_on_each_position_alone():
    """Chunks, threads and the pixel lists change nothing: a position's figures come from its own window."""
    rng = np.random.default_rng(4)
    geom = _geometry()
    image = rng.poisson(2.0, geom.shape).astype(np.float64)
    labels = np.zeros(geom.shape, np.int32)
    labels[rng.integers(0, 1024, 300), rng.integers(0, 1024, 300)] = 1  # "spots" to leave out
    mask = np.asfortranarray((rng.random(geom.shape) < 0.001).astype(np.uint32))  # not C-ordered: read as is
    positions = rng.uniform(-5, 1030, (700, 2))  # some too near the edges: NaN
    whole = aperture_significance(image, positions, geom, exclude=(labels, mask), radius=2.5)
    assert 0 < np.isnan(whole[0]).sum() < 100
    part = aperture_significance(image, positions[::3], geom, exclude=(labels, np.ascontiguousarray(mask)),
                                 radius=2.5, chunk=37, workers=2, with_pixels=False)
    for a, b in zip(whole[:3], part[:3]):
        np.testing.assert_array_equal(a[::3], b)
    assert part[3] is None
    assert all(len(p) == 0 or (p.ndim == 2 and p.shape[1] == 2) for p in whole[3])
    # the exclusion is read: without it the figures differ somewhere
    free = aperture_significance(image, positions, geom, radius=2.5, with_pixels=False)
    assert not np.array_equal(free[1], whole[1], equal_nan=True)


def _small_still():
    """A 1024² still of a crystal to 1.1 Å on a flat-panel detector: many weak spots."""
    return random_still(2, detector="arbitrary", shape=(1024, 1024), anomalies=["ice_ring"], style="realistic")


def test_search_adds_missed_spots_that_are_real():
    still = _small_still()
    spots = still.spots
    true_xy = np.column_stack([spots["fast"], spots["slow"]])
    strong = (spots["snr"] >= 5) & spots["in_mask"]
    res = find_spots(still.image, method="dispersion", geometry=still.geometry, pixel_mask=still.pixel_mask,
                     lattice_search="off")
    exclude = (res.labels > 0) | (still.pixel_mask != 0)
    found = lattice_spot_search(still.image, res.table, still.geometry, exclude=exclude)
    assert found is not None
    assert found.residual_px < 0.5
    assert len(found.positions) >= 20
    # the spots it adds are reflections (within 3 px of one), and they are the strong spots the finder missed
    assert match_spots(found.positions, true_xy, radius=3.0)[0].mean() > 0.9
    before = match_spots(res.table.fast_slow(), true_xy, radius=3.0)[1][strong].mean()
    after = match_spots(np.vstack([res.table.fast_slow(), found.positions]), true_xy, radius=3.0)[1][strong].mean()
    assert after > before + 0.03
    # find_spots does the same, marks them, and keeps its other spots as they were
    res2 = find_spots(still.image, method="dispersion", geometry=still.geometry, pixel_mask=still.pixel_mask,
                      lattice_search="auto", ice_rings="keep", beamstop_shadow="keep")
    res1 = find_spots(still.image, method="dispersion", geometry=still.geometry, pixel_mask=still.pixel_mask,
                      lattice_search="off", ice_rings="keep", beamstop_shadow="keep")
    predicted = res2.table["predicted"]
    assert predicted.sum() >= 15 and not res1.table["predicted"].any()
    assert np.allclose(res2.table.fast_slow()[~predicted], res1.table.fast_slow())
    # the ice rule's verdicts on the finder's own spots are those without the search; it never takes the
    # search's spots for grains
    assert np.array_equal(res2.table["ice_probability"][~predicted], res1.table["ice_probability"])
    assert not res2.table["ice_ring"][predicted].any()
    assert np.array_equal(res2.labels[res1.labels > 0], res1.labels[res1.labels > 0])
    assert set(np.unique(res2.labels[(res2.labels > 0) & (res1.labels == 0)])) == set(
        np.flatnonzero(predicted) + 1)


def test_no_lattice_nothing_added():
    still = _small_still()
    geom = still.geometry
    rng = np.random.default_rng(0)
    xy = rng.uniform(50, 970, (300, 2))  # spots at random places: no lattice indexes them
    d = np.atleast_1d(geom.resolution_at(xy[:, 0], xy[:, 1]))
    table = SpotTable({"x": xy[:, 0], "y": xy[:, 1], "d": d, "sigma_radial": np.ones(300),
                       "sigma_azimuthal": np.ones(300)})
    assert lattice_spot_search(still.image, table, geom) is None
    assert frame_lattice(xy[:10], geom, np.ones(10, bool)) is None
    with pytest.raises(ValueError, match="lattice_search"):
        find_spots(still.image, method="dispersion", lattice_search="on")


def test_expected_chance_passes_bounds_the_chance_passes():
    rng = np.random.default_rng(3)
    rate, n_empty = 0.06, 300
    for n_real, found_rate in ((0, 0.0), (100, 0.8), (600, 0.7), (600, 0.2)):
        estimates, chance = [], []
        for _ in range(2000):
            by_chance = rng.binomial(n_empty, rate)
            passed = by_chance + rng.binomial(n_real, found_rate)
            estimates.append(expected_chance_passes(rate, n_empty + n_real, passed))
            chance.append(by_chance)
        # in expectation at least the chance passes (equal when no prediction holds a spot) ...
        assert np.mean(estimates) >= np.mean(chance) - 0.3
        if n_real == 0:
            assert np.mean(estimates) == pytest.approx(np.mean(chance), rel=0.05)
        # ... and below "every prediction empty" when many passed: real spots are not counted as chances
        if n_real and found_rate > 0.5:
            assert np.mean(estimates) < 0.85 * rate * (n_empty + n_real)


def test_expected_chance_passes_values_and_refusals():
    assert expected_chance_passes(0.1, 100, 10) == pytest.approx(0.1 * 90 / 0.9)
    assert expected_chance_passes(0.0, 100, 50) == 0.0
    assert expected_chance_passes(1.0, 100, 100) == np.inf
    for args in ((-0.1, 10, 1), (1.5, 10, 1), (0.1, 10, 11), (0.1, 10, -1)):
        with pytest.raises(ValueError):
            expected_chance_passes(*args)
