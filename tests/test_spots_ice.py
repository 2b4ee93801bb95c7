"""Ice rings in spot lists: contaminated shells found per frame, and find_spots(ice_rings=...)."""

import numpy as np
import pytest

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.spots import ICE_RING_D, contaminated_ice_shells, find_spots
from napari_xrd.core.spots.ice import (
    flag_ice_ring_spots,
    ice_grain_probability,
    in_shells,
    refine_ice_probability,
    spot_descriptors,
)


def _bragg_d(rng, n, s_max=0.6):
    """Resolutions of ``n`` spots spread like Bragg spots on a flat detector (density ~ s in s)."""
    s = s_max * np.sqrt(rng.uniform(0.01, 1.0, n))
    return 1.0 / s


def _bragg_and_grains(rng, per_line, n_bragg=1500, spread=0.002):
    """Resolutions of ``n_bragg`` Bragg spots, then of ``per_line[k]`` grains about ice line ``k``; which are grains."""
    bragg = _bragg_d(rng, n_bragg)
    grains = np.concatenate([1.0 / (1.0 / d + rng.normal(0, spread, n)) for d, n in zip(ICE_RING_D, per_line)])
    return np.concatenate([bragg, grains]), np.r_[np.zeros(bragg.size, bool), np.ones(grains.size, bool)]


def test_shell_found_only_where_grains_pile_up():
    rng = np.random.default_rng(1)
    bragg = _bragg_d(rng, 600)
    line = 1.0 / ICE_RING_D[1]  # 3.669 Å
    grains = 1.0 / (line + rng.normal(0, 0.002, 120))
    shells = contaminated_ice_shells(np.concatenate([bragg, grains]))
    assert shells.shape == (1, 2)
    d_max, d_min = shells[0]
    assert d_min < ICE_RING_D[1] < d_max
    # the shell holds (nearly) all grains and is no wider than the cap
    assert in_shells(grains, shells).mean() > 0.9
    assert 1 / d_min - 1 / d_max <= 2 * 0.012 + 1e-9
    # Bragg spots outside the shell are untouched
    assert in_shells(bragg, shells).mean() < 0.06


def test_close_lines_each_get_a_narrow_shell_of_their_own():
    # the 1.948, 1.917 and 1.883 Å lines lie 0.008-0.009 Å⁻¹ apart in s; each
    # shell must hold its own grains, not stretch to cover its neighbours'
    rng = np.random.default_rng(2)
    bragg = _bragg_d(rng, 1000)
    lines = [ICE_RING_D[i] for i in (6, 7, 8)]
    assert np.allclose(lines, [1.948, 1.917, 1.883], atol=1e-3)
    grains = np.concatenate([1.0 / (1.0 / d + rng.normal(0, 0.001, 60)) for d in lines])
    shells = contaminated_ice_shells(np.concatenate([bragg, grains]))
    assert len(shells) == 3
    half_widths = 0.5 * (1 / shells[:, 1] - 1 / shells[:, 0])
    assert np.all(half_widths < 0.005)
    assert in_shells(grains, shells).mean() > 0.9
    assert in_shells(bragg, shells).mean() < 0.08  # narrow shells hold ~5% of them; shells stretched to 0.012, ~15%


@pytest.mark.parametrize("seed", range(5))
def test_no_shell_on_ice_free_spot_lists(seed):
    rng = np.random.default_rng(seed)
    for n in (30, 300, 3000):
        assert contaminated_ice_shells(_bragg_d(rng, n)).shape == (0, 2)


def test_shell_counts_pixels_per_resolution_bin_with_geometry():
    # with the detector geometry, the expected count follows the valid pixels per shell
    geom = DetectorGeometry(shape=(600, 600), pixel_size=0.172, distance=100.0, beam_center=(300.0, 300.0),
                            wavelength=1.0)
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 600, (800, 2))
    bragg = geom.resolution_at(xy[:, 0], xy[:, 1])
    assert contaminated_ice_shells(bragg, geometry=geom).shape == (0, 2)
    line = 1.0 / ICE_RING_D[0]
    grains = 1.0 / (line + rng.normal(0, 0.0015, 60))
    shells = contaminated_ice_shells(np.concatenate([bragg, grains]), geometry=geom)
    assert shells.shape == (1, 2) and shells[0, 1] < ICE_RING_D[0] < shells[0, 0]


def test_flag_modes():
    rng = np.random.default_rng(4)
    d = np.concatenate([_bragg_d(rng, 400), 1.0 / (1.0 / ICE_RING_D[0] + rng.normal(0, 0.001, 80))])
    auto = flag_ice_ring_spots(d, mode="auto")
    assert auto[400:].mean() > 0.9 and auto[:400].mean() < 0.1  # most Bragg spots stay
    assert np.array_equal(flag_ice_ring_spots(d, mode="keep"), auto)
    fixed = flag_ice_ring_spots(d, mode="filter")
    # a frame with spotty ice on one line: Bragg spots on the other, grain-free lines stay
    # (the fixed DIALS rings would drop them)
    other_lines = fixed & (np.abs(1.0 / d - 1.0 / ICE_RING_D[0]) > 0.012)
    assert other_lines.sum() >= 3 and not auto[other_lines].any()
    # a frame without ice: auto spares the Bragg spots on the ice lines that the fixed filter drops
    clean = d[:400]
    assert not flag_ice_ring_spots(clean, mode="auto").any() and flag_ice_ring_spots(clean, mode="filter").any()
    with pytest.raises(ValueError, match="ice_rings"):
        flag_ice_ring_spots(d, mode="off")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grain_probability_is_calibrated_on_lines_of_every_strength(seed):
    # grains on ten lines, from 150 down to 4 per line, spread 0.002 Å⁻¹ about them, among 1500 Bragg spots
    d, is_grain = _bragg_and_grains(np.random.default_rng(seed), [150, 60, 40, 12, 25, 15, 0, 8, 6, 0, 4])
    p, spread = ice_grain_probability(d)
    assert 0.0015 < spread < 0.0027
    assert np.all((p >= 0) & (p <= 1))
    # the probabilities mean what they say
    assert is_grain[p < 0.3].mean() < 0.2
    assert 0.25 < is_grain[(p >= 0.3) & (p <= 0.7)].mean() < 0.75
    assert is_grain[p > 0.7].mean() > 0.75
    # the flags: most grains, few Bragg spots (whole shells took 8-11 % of them on these seeds)
    flags = flag_ice_ring_spots(d, mode="auto")
    assert np.array_equal(flags, p > 0.5)
    assert flags[is_grain].mean() > 0.7 and flags[~is_grain].mean() < 0.07
    # spots far from every line are never grains
    s = 1.0 / d
    far = np.abs(s[:, None] - 1.0 / np.asarray(ICE_RING_D)[None, :]).min(axis=1) > 0.012
    assert far.sum() > 500 and np.all(p[far] == 0)


def test_grain_probability_of_unusable_input():
    p, spread = ice_grain_probability([np.nan, -1.0, 0.0])
    assert np.array_equal(p, np.zeros(3)) and np.isnan(spread)
    p, _ = ice_grain_probability([])
    assert p.shape == (0,)


def _spotty_ice_frame(seed=0):
    """400 x 400 frame: 12 Bragg spots off the ice rings, 40 ice grains on the 3.895 Å ring."""
    geom = DetectorGeometry(shape=(400, 400), pixel_size=0.172, distance=80.0, beam_center=(200.0, 200.0),
                            wavelength=1.0)
    rng = np.random.default_rng(seed)
    img = rng.poisson(5.0, (400, 400)).astype(np.float32)
    r_ice = geom.radius_px_for_d(ICE_RING_D[0])
    spots = []
    for ang in np.linspace(0, 2 * np.pi, 40, endpoint=False):
        spots.append((200 + r_ice * np.cos(ang), 200 + r_ice * np.sin(ang)))
    for k, ang in enumerate(np.linspace(0, 2 * np.pi, 12, endpoint=False)):
        r = geom.radius_px_for_d(3.0 if k % 2 else 5.0)
        spots.append((200 + r * np.cos(ang + 0.1), 200 + r * np.sin(ang + 0.1)))
    for x, y in spots:
        img[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] += 200
    return img, geom


def test_find_spots_auto_drops_spotty_ring_keeps_bragg_spots():
    img, geom = _spotty_ice_frame()
    keep = find_spots(img, geometry=geom, ice_rings="keep")
    auto = find_spots(img, geometry=geom, ice_rings="auto")
    assert keep.table.n_spots == 52
    assert keep.table["ice_ring"].sum() == 40
    # each spot's chance of being a grain: high on the ring, 0 off every line
    p = keep.table["ice_probability"]
    assert np.all(p[keep.table["ice_ring"]] > 0.5) and np.all(p[~keep.table["ice_ring"]] == 0)
    assert keep.table.rows()[0]["ice_probability"] == pytest.approx(float(p[0]))
    assert auto.table.n_spots == 12 and not auto.table["ice_ring"].any()
    assert np.all(np.abs(auto.table["d"] - ICE_RING_D[0]) > 0.3)
    assert auto.labels.max() == 12
    # rows carry the flag for JSON
    assert keep.table.rows()[0]["ice_ring"] in (True, False)
    # without geometry nothing can be flagged
    assert not find_spots(img, ice_rings="auto").table["ice_ring"].any()
    assert not find_spots(img, ice_rings="auto").table["ice_probability"].any()


def _spots_with_looks(seed, grain_shift):
    """1500 Bragg spots and 290 grains on ten ice lines, with 4 look descriptors each.

    The Bragg spots' first descriptor (log intensity) falls with resolution;
    the grains' descriptors are the Bragg spots' shifted by ``grain_shift``.
    """
    rng = np.random.default_rng(seed)
    d, is_grain = _bragg_and_grains(rng, [120, 60, 40, 12, 25, 15, 0, 8, 6, 0, 4])
    looks = rng.normal(0.0, 1.0, (d.size, 4)) * [0.4, 0.2, 0.1, 0.1]
    looks[:, 0] += 3.0 - 2.0 / d
    looks[is_grain] += grain_shift
    return d, looks, is_grain


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("grain_shift", [[0.8, 0, 0, 0], [-0.5, 0, 0.3, -0.2]], ids=["brighter", "fainter-radial"])
def test_refined_probability_learns_how_this_frames_grains_look(seed, grain_shift):
    # grains brighter than the Bragg spots, or fainter and radially wider: the
    # refinement is told neither, and learns either from the frame
    d, looks, is_grain = _spots_with_looks(seed, grain_shift)
    prior, _ = ice_grain_probability(d)
    p = refine_ice_probability(prior, looks, d)
    assert np.all((p >= 0) & (p <= 1))
    bragg_before, bragg_after = (prior[~is_grain] > 0.5).mean(), (p[~is_grain] > 0.5).mean()
    grains_before, grains_after = (prior[is_grain] > 0.5).mean(), (p[is_grain] > 0.5).mean()
    assert bragg_before > 0.035 and bragg_after < 0.7 * bragg_before  # Bragg spots on the lines are spared
    assert grains_after > grains_before + 0.08  # grains off the line centres are caught
    # spots far from every line keep their prior (0)
    far = np.abs(1.0 / d[:, None] - 1.0 / np.asarray(ICE_RING_D)[None, :]).min(axis=1) > 0.012
    assert np.all(p[far] == prior[far])


@pytest.mark.parametrize("seed", [0, 1])
def test_refined_probability_leaves_lookalike_grains_to_resolution(seed):
    d, looks, is_grain = _spots_with_looks(seed, [0, 0, 0, 0])
    prior, _ = ice_grain_probability(d)
    p = refine_ice_probability(prior, looks, d)
    assert abs((p[~is_grain] > 0.5).mean() - (prior[~is_grain] > 0.5).mean()) < 0.01
    assert abs((p[is_grain] > 0.5).mean() - (prior[is_grain] > 0.5).mean()) < 0.03


def test_refined_probability_needs_enough_spots_and_keeps_unusable_rows():
    d, looks, is_grain = _spots_with_looks(0, [0.8, 0, 0, 0])
    prior, _ = ice_grain_probability(d)
    # too few reference spots to learn the Bragg look: the prior is returned
    few = np.r_[np.flatnonzero(~is_grain)[:20], np.flatnonzero(is_grain)]
    assert np.array_equal(refine_ice_probability(prior[few], looks[few], d[few]), prior[few])
    # rows with a NaN descriptor keep their prior; the others are still refined
    looks[is_grain.nonzero()[0][:5], 2] = np.nan
    p = refine_ice_probability(prior, looks, d)
    assert np.array_equal(p[is_grain.nonzero()[0][:5]], prior[is_grain.nonzero()[0][:5]])
    assert not np.array_equal(p, prior)


def test_spot_descriptors_from_a_table():
    table = {"intensity": np.array([1000.0, 0.0]), "size": np.array([10, 1]),
             "sigma_radial": np.array([2.0, np.nan]), "sigma_azimuthal": np.array([0.5, 0.0])}
    x = spot_descriptors(table)
    assert x.shape == (2, 4)
    assert x[0] == pytest.approx([3.0, 1.0, 0.5 * np.log10(4 + 1 / 12), 0.5 * np.log10(0.25 + 1 / 12)])
    assert x[1, 0] == 0.0 and np.isnan(x[1, 2])


def test_find_spots_spares_bragg_spots_on_a_spotty_ring_that_look_like_the_frames_bragg_spots():
    # 900 x 900 frame: 40 grains about the 3.895 Å line (5 x 5 px, bright, spread 0.002 Å⁻¹ in s),
    # 6 Bragg spots among them 0.001 Å⁻¹ off the line, and 400 Bragg spots (3 x 3 px) elsewhere
    n = 900
    geom = DetectorGeometry(shape=(n, n), pixel_size=0.172, distance=80.0, beam_center=(n / 2, n / 2),
                            wavelength=1.0)
    rng = np.random.default_rng(5)
    img = rng.poisson(5.0, (n, n)).astype(np.float32)

    def put(x, y, half, counts):
        img[int(y) - half : int(y) + half + 1, int(x) - half : int(x) + half + 1] += counts

    line, placed, on_ring = 1.0 / ICE_RING_D[0], [], []
    for k, ang in enumerate(np.linspace(0, 2 * np.pi, 46, endpoint=False)):
        bragg = k % 8 == 3
        s = line + ((0.001 if k % 16 == 3 else -0.001) if bragg else rng.normal(0, 0.002))
        r = geom.radius_px_for_d(1.0 / s)
        x, y = n / 2 + r * np.cos(ang), n / 2 + r * np.sin(ang)
        put(x, y, 1 if bragg else 2, 200 + 100 * rng.random() if bragg else 1500)
        placed.append((x, y))
        if bragg:
            on_ring.append((x, y))
    while len(placed) < 446:
        x, y = rng.uniform(20, n - 20, 2)
        if all(np.hypot(x - u, y - v) > 10 for u, v in placed):
            put(x, y, 1, 200 + 100 * rng.random())
            placed.append((x, y))
    keep = find_spots(img, geometry=geom, ice_rings="keep").table
    assert keep.n_spots == 446
    grains = keep["size"] >= 20
    xy = keep.fast_slow()
    ring_bragg = np.array([np.hypot(*(xy - (np.floor(u) + 0.5, np.floor(v) + 0.5)).T).argmin() for u, v in on_ring])
    assert grains.sum() == 40 and not grains[ring_bragg].any()
    # by resolution alone, the Bragg spots among the grains are grains
    from napari_xrd.core.spots.ice import spotty_ice_probability

    assert np.all(spotty_ice_probability(keep["d"], geometry=geom)[ring_bragg] > 0.5)
    # their look (small and faint, like the frame's other Bragg spots) spares them; the grains go
    assert not keep["ice_ring"][ring_bragg].any() and keep["ice_probability"][ring_bragg].max() < 0.5
    assert keep["ice_ring"][grains].sum() >= 38 and keep["ice_ring"][~grains].sum() <= 2
    auto = find_spots(img, geometry=geom, ice_rings="auto").table
    assert auto.n_spots == 446 - keep["ice_ring"].sum() and not auto["ice_ring"].any()


def test_ice_line_distance():
    from napari_xrd.core.spots.ice import ice_line_distance

    d = np.array([ICE_RING_D[0], 1.0 / (1.0 / ICE_RING_D[4] + 0.003), np.nan, -1.0, 0.0])
    dist = ice_line_distance(d)
    assert dist[0] == pytest.approx(0.0, abs=1e-12) and dist[1] == pytest.approx(0.003)
    assert np.all(np.isinf(dist[2:]))


def test_bragg_spots_crowding_an_ice_line_of_a_still_without_ice_are_kept():
    # U-Net spots of a simulated still without ice (see tests/data/README.md): its Bragg spots crowd the
    # 3.897 Å line enough for the crowding test to fire, and the lattice of the spots away from the lines
    # does not reach them; indexed from all spots, the lattice does, and they stay Bragg spots
    import json
    from pathlib import Path

    from napari_xrd.core.detectors import DETECTORS
    from napari_xrd.core.geometry import DetectorGeometry
    from napari_xrd.core.masks import GAP
    from napari_xrd.core.spots.ice import contaminated_ice_shells, spot_descriptors, spotty_ice_probability

    data = json.loads((Path(__file__).parent / "data" / "still_spots_near_ice_lines.json").read_text())
    geometry = DetectorGeometry.from_dict(data["geometry"])
    pixel_mask = np.where(DETECTORS["pilatus6m"].gap_mask(geometry.shape), GAP, 0).astype(np.uint32)
    table = {k: np.asarray(data[k], float) for k in ("x", "y", "d", "intensity", "size", "sigma_radial",
                                                     "sigma_azimuthal")}
    bragg = np.asarray(data["bragg"], bool)
    assert len(contaminated_ice_shells(table["d"], geometry=geometry, pixel_mask=pixel_mask)) >= 1
    p = spotty_ice_probability(table["d"], geometry=geometry, pixel_mask=pixel_mask,
                               descriptors=spot_descriptors(table),
                               positions=np.column_stack([table["x"], table["y"]]))
    near = np.abs(1 / table["d"] - 1 / 3.897) < 0.006
    assert bragg[near].sum() >= 8  # the crowd the test is about
    assert np.mean(p[bragg] > 0.5) < 0.1


def test_pixel_exposure_is_remembered_only_for_the_same_valid_pixels():
    from napari_xrd.core.spots import ice

    geom = DetectorGeometry(shape=(400, 400), pixel_size=0.172, distance=80.0, beam_center=(200.0, 200.0),
                            wavelength=1.0)
    edges = np.linspace(0.1, 0.6, 200)
    mask = np.zeros(geom.shape, np.uint32)
    first = ice._pixel_exposure(edges, geom, mask)
    first[:] = -1  # the caller's copy: the remembered one is untouched
    again = ice._pixel_exposure(edges, geom, mask)
    assert again.min() >= 0
    mask[:, :200] = 1  # changed in place: the same array, other valid pixels
    half = ice._pixel_exposure(edges, geom, mask)
    assert 0.4 * again.sum() < half.sum() < 0.6 * again.sum()
    ice._EXPOSURES.clear()
    np.testing.assert_array_equal(half, ice._pixel_exposure(edges, geom, mask))
    np.testing.assert_array_equal(again, ice._pixel_exposure(edges, geom, np.zeros(geom.shape, np.uint32)))
