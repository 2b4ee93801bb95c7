"""Powder rings in the U-Net's input background: the 2θ profile, its beam-centre cross-check, and what it finds."""

import numpy as np
import pytest

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.spots.inference import _block_median_background, anscombe, frame_background, prepare_input
from napari_xrd.core.spots.ring_background import powder_ring_background

BEAM = (321.3, 318.7)


def ring_frame(seed=0, *, photons=200.0, n_spots=16, shape=(640, 640), beam=BEAM, pitch=0.0, yaw=0.0):
    """Poisson frame with a narrow ring (σ 2.5 px, 40 photons/px) and weak spots sitting on it.

    Returns the image, its geometry, the spots' (fast, slow) positions and
    the expected counts without spots.
    """
    rng = np.random.default_rng(seed)
    g = DetectorGeometry(shape, 0.172, 200.0, beam, 1.0, pitch=pitch, yaw=yaw)
    u = g.distance * np.tan(g.two_theta_map()) / g.pixel_size
    lam = 0.5 + 40.0 * np.exp(-0.5 * ((u - 200) / 2.5) ** 2) + 8.0 * np.exp(-0.5 * ((u - 120) / 1.5) ** 2)
    background = lam.copy()
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    angle = rng.uniform(0, 2 * np.pi, n_spots)
    radius = 200 + rng.uniform(-1.5, 1.5, n_spots)
    xy = np.column_stack([beam[0] + radius * np.cos(angle), beam[1] + radius * np.sin(angle)])
    for x, y in xy:
        lam = lam + photons / (2 * np.pi * 1.1**2) * np.exp(-((xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2) / 2.42)
    return rng.poisson(lam).astype(np.float32), g, xy, background


def test_equivalent_radius_map_is_distance_tan_two_theta():
    for pitch, yaw in ((0.0, 0.0), (2.5, -1.5)):
        g = DetectorGeometry((90, 120), 0.1, 80.0, (40.5, 61.2), 1.0, pitch=pitch, yaw=yaw)
        expected = g.distance * np.tan(g.two_theta_map()) / g.pixel_size
        got = g.equivalent_radius_map()
        assert got.shape == (90, 120) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
        assert g.equivalent_radius_map(np.float64).dtype == np.float64


def test_profile_follows_a_narrow_ring_and_ignores_spots():
    img, g, _, background = ring_frame(photons=2000.0, pitch=1.5)  # bright spots must be clipped out
    prof = powder_ring_background(img, g, min_sd=0.0)
    assert prof.shape == img.shape and prof.dtype == np.float32 and np.all(np.isfinite(prof))
    ring = background > 10
    # the profile reproduces the ring (the blocks cannot: they flatten a 2.5-px ring)
    assert np.median(np.abs(prof[ring] - background[ring])) < 1.0
    blocks = _block_median_background(img, np.ones(img.shape, bool))
    assert np.median(np.abs(blocks[ring] - background[ring])) > 3.0
    # masked pixels are not used: a masked band of bright junk changes nothing
    junk = img.copy()
    junk[100:110] = 1e6
    valid = np.ones(img.shape, bool)
    valid[100:110] = False
    np.testing.assert_allclose(powder_ring_background(junk, g, valid=valid), powder_ring_background(img, g, valid=valid))


def test_opposite_quadrants_agree_only_about_the_true_centre():
    img, g, _, _ = ring_frame(photons=0.0)
    ring = (np.abs(g.equivalent_radius_map() - 200) < 5)
    prof, opposite = powder_ring_background(img, g, with_opposite=True)
    np.testing.assert_allclose(prof, powder_ring_background(img, g), rtol=1e-5, atol=1e-4)
    good = np.mean(np.abs(prof - opposite)[ring])
    g_off = g.replace(beam_center=(BEAM[0] + 4.0, BEAM[1] - 3.0))
    prof_off, opposite_off = powder_ring_background(img, g_off, with_opposite=True)
    bad = np.mean(np.abs(prof_off - opposite_off)[ring])
    assert bad > 4 * good


@pytest.mark.parametrize("beam", [BEAM, (-40.0, 700.0), (321.3, 0.2)])
def test_profile_expanded_in_row_chunks_is_the_same(monkeypatch, beam):
    import napari_xrd.core.spots.ring_background as rb

    image, g, _, _ = ring_frame(1, beam=beam)
    a = anscombe(image)
    whole = powder_ring_background(a, g, min_sd=1.0, with_opposite=True)
    monkeypatch.setattr(rb, "_CHUNK_PIXELS", 640 * 7 + 5)  # chunks of 7 rows; one holds the split row
    chunked = powder_ring_background(a, g, min_sd=1.0, with_opposite=True)
    for x, y in zip(whole, chunked):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(powder_ring_background(a, g, min_sd=1.0), whole[0])
    if beam == BEAM:  # opposite quadrants' profiles differ a little from the frame's
        assert 0 < np.abs(whole[1] - whole[0]).max() < 2.0


def test_frame_background_uses_the_rings_only_with_a_good_centre():
    img, g, _, _ = ring_frame()
    valid = np.ones(img.shape, bool)
    bg, info = frame_background(img, valid, g)
    assert info["rings_used"] and info["structure_opposite"] < info["structure_blocks"]
    assert bg.shape == img.shape and bg.dtype == np.float32
    # the rings' background as "on" makes it (whose profile has no quadrants: equal to rounding)
    np.testing.assert_allclose(bg, frame_background(img, valid, g, ring_background="on")[0], atol=1e-5)
    # a beam centre 1.3 mm off: the check refuses the profile, the blocks are used
    bg_off, info_off = frame_background(img, valid, g.replace(beam_center=(BEAM[0] + 6.0, BEAM[1] + 5.0)))
    assert not info_off["rings_used"]
    np.testing.assert_allclose(bg_off, _block_median_background(anscombe(img), valid))
    # forced on uses it anyway; off and no geometry leave the tiles their own blocks
    assert frame_background(img, valid, g.replace(beam_center=(BEAM[0] + 6.0, BEAM[1] + 5.0)), ring_background="on")[1]["rings_used"]
    assert frame_background(img, valid, g, ring_background="off")[0] is None
    assert frame_background(img, valid, None)[0] is None
    with pytest.raises(ValueError, match="ring_background"):
        frame_background(img, valid, g, ring_background="maybe")
    with pytest.raises(ValueError, match="shape"):
        frame_background(img[:-1], valid[:-1], g)


def test_prepare_input_with_the_frame_background_matches_its_own_blocks():
    rng = np.random.default_rng(3)
    img = rng.poisson(6.0, (64, 96)).astype(np.float32)
    valid = rng.random(img.shape) > 0.05
    own = prepare_input(img, valid, normalisation="local")
    given = prepare_input(img, valid, normalisation="local", background=_block_median_background(anscombe(img), valid & np.isfinite(img)))
    np.testing.assert_allclose(own, given, atol=1e-5)


def test_device_batch_takes_the_same_background():
    torch = pytest.importorskip("torch")
    from napari_xrd.core.spots.device_input import prepare_input_batch

    img, g, _, _ = ring_frame(photons=0.0, shape=(128, 160), beam=(80.2, 60.9))
    valid = np.ones(img.shape, bool)
    bg, _ = frame_background(img, valid, g, ring_background="on")
    ref = prepare_input(img, valid, normalisation="local", background=bg)
    got = prepare_input_batch(torch.from_numpy(img)[None], torch.from_numpy(valid)[None], normalisation="local",
                              background=torch.from_numpy(bg)[None])[0].numpy()
    np.testing.assert_allclose(got, ref, atol=0.02)


@pytest.mark.slow
def test_unet_finds_weak_spots_on_a_narrow_ring_only_with_the_profile():
    pytest.importorskip("torch")
    from napari_xrd.core.spots import find_spots
    from napari_xrd.core.spots.metrics import match_spots

    img, g, xy, _ = ring_frame(seed=1)  # 16 spots of 200 photons on a 40-photon ring: SNR about 7
    found = {}
    for mode in ("off", "auto"):
        r = find_spots(img, method="unet", geometry=g, ring_background=mode, ice_rings="keep",
                       beamstop_shadow="keep", device="cpu")
        hit_pred, hit_true = match_spots(r.table.fast_slow(), xy)
        found[mode] = (int(hit_true.sum()), int((~hit_pred).sum()))
    assert found["auto"][0] >= 14 and found["auto"][1] <= 1
    assert found["off"][0] <= 4


def test_block_medians_interpolated_at_some_rows_are_those_rows_of_the_whole():
    from napari_xrd.core.spots.inference import _block_medians, _interpolated_blocks

    rng = np.random.default_rng(0)
    a = rng.normal(size=(70, 53)).astype(np.float32)
    valid = rng.random(a.shape) > 0.1
    med = _block_medians(a, valid)
    whole = _interpolated_blocks(med, a.shape)
    np.testing.assert_array_equal(whole, _block_median_background(a, valid))
    np.testing.assert_array_equal(_interpolated_blocks(med, a.shape, rows=slice(1, None, 3)), whole[1::3])
