"""Spots in the beamstop's shadow: found from the frame, dropped or flagged by find_spots."""

import numpy as np
import pytest

from napari_xrd.core.beam_center._common import block_sums
from napari_xrd.core.beam_center.beamstop import beamstop_shadow_at, beamstop_shadow_mask
from napari_xrd.core.coords import pixel_index
from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.spots import find_spots


def _gaussian(img, x, y, photons, sigma=1.0):
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    img += photons / (2 * np.pi * sigma**2) * np.exp(-((xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2) / (2 * sigma**2))


def _frame(seed=0, *, pedestal=0.0, shadow=True, gaps=False, bright_band=False):
    """A 400 x 400 frame, beam at (210.0, 190.0), a 30-px beamstop with an arm, spots in and out of its shadow."""
    rng = np.random.default_rng(seed)
    ny = nx = 400
    yy, xx = np.mgrid[:ny, :nx]
    bx, by = 210.0, 190.0
    r = np.hypot(xx + 0.5 - bx, yy + 0.5 - by)
    expected = 35.0 + 25.0 * np.exp(-r / 150.0)
    if bright_band:  # a bright patch in the disc's module (detector response, a flare): its surroundings
        # read well below the smoothed local level, as dim as a penumbra
        expected = np.where((yy >= 105) & (yy < 140), 6.0 * expected, expected)
    if shadow:
        disc = r < 30.0
        arm = (np.abs(yy + 0.5 - by) < 6.0) & (xx + 0.5 > bx)
        expected = np.where(disc | arm, 3.0, expected)  # some scatter reaches the shadow
    img = expected.copy()
    _gaussian(img, bx + 9.0, by - 4.0, 600.0, sigma=1.2)  # scatter leaking round the beamstop, inside the disc
    outside = [(60.5, 70.5), (320.5, 300.5), (150.5, 330.5), (330.5, 80.5)]
    for x, y in outside:
        _gaussian(img, x, y, 800.0)
    img = rng.poisson(img).astype(np.float64) + pedestal + rng.normal(0, 2.0 if pedestal else 0.0, img.shape)
    pm = np.zeros((ny, nx), np.uint32)
    if gaps:  # a grid of module gaps, as on a pixel-array detector
        pm[:, 97:104] = 1
        pm[:, 297:304] = 1
        pm[95:105, :] = 1
        pm[295:305, :] = 1
    geom = DetectorGeometry(shape=(ny, nx), pixel_size=0.172, distance=200.0, wavelength=1.0,
                            beam_center=(bx + 25.0, by - 20.0))  # the header's centre is 5.5 mm off
    return img, pm, geom, (bx + 9.0, by - 4.0), outside


@pytest.mark.parametrize("pedestal", [0.0, 25.0])  # photon counting; a CCD reads ~25 counts with no photons
def test_shadow_mask_covers_the_disc_and_arm_not_the_rest(pedestal):
    img, pm, geom, _, _ = _frame(pedestal=pedestal)
    m = beamstop_shadow_mask(img, pm == 0, beam_center=geom.beam_center, pixel_size=geom.pixel_size)
    yy, xx = np.mgrid[:400, :400]
    r = np.hypot(xx + 0.5 - 210.0, yy + 0.5 - 190.0)
    assert m[r < 25].mean() > 0.98  # the disc, the bright streak in it included
    assert m[(np.abs(yy + 0.5 - 190.0) < 3) & (xx > 300)].mean() > 0.9  # the arm
    assert m[r > 40].mean() < 0.05  # the arm's strip, no more (it is 5% of the frame)
    assert m[(r > 40) & (np.abs(yy + 0.5 - 190.0) > 12)].sum() == 0


def test_shadow_at_points_is_the_mask_looked_up():
    img, pm, geom, _, _ = _frame(gaps=True)
    pm[200:203, 150:153] = 8  # a masked pixel inside the shadow
    kw = dict(beam_center=geom.beam_center, pixel_size=geom.pixel_size)
    m = beamstop_shadow_mask(img, pm == 0, **kw)
    rng = np.random.default_rng(3)
    pts = np.concatenate([rng.uniform(-3.0, 403.0, (4000, 2)), rng.normal(200.0, 40.0, (4000, 2)),
                          [[151.5, 201.5], [399.9, 399.9]]])
    at = beamstop_shadow_at(pts, img, pm == 0, **kw)
    assert 500 < at.sum() < len(pts) - 500  # points in and out of the shadow
    np.testing.assert_array_equal(at, m[pixel_index(pts, img.shape)])
    assert not at[-2]  # the masked pixel
    assert beamstop_shadow_at(np.zeros((0, 2)), img, pm == 0, **kw).shape == (0,)


@pytest.mark.parametrize("factor", [2, 3, 7])
def test_block_sums_are_those_of_reshaped_blocks(factor):
    rng = np.random.default_rng(factor)
    data = rng.normal(10.0, 3.0, (101, 94)).astype(np.float32)
    valid = rng.random(data.shape) > 0.2
    s, c = block_sums(data, valid, factor)
    h, w = 101 // factor, 94 // factor
    blocks = np.where(valid, data, 0.0)[: h * factor, : w * factor].reshape(h, factor, w, factor)
    np.testing.assert_allclose(s, blocks.sum(axis=(1, 3), dtype=np.float64), rtol=1e-12)
    np.testing.assert_array_equal(c, valid[: h * factor, : w * factor].reshape(h, factor, w, factor).sum(axis=(1, 3)))


def test_no_shadow_no_mask_and_module_gaps_are_not_shadow():
    img, pm, geom, _, _ = _frame(shadow=False, gaps=True)
    assert not beamstop_shadow_mask(img, pm == 0, beam_center=geom.beam_center, pixel_size=geom.pixel_size).any()
    img, pm, geom, _, _ = _frame(shadow=True, gaps=True)
    m = beamstop_shadow_mask(img, pm == 0, beam_center=geom.beam_center, pixel_size=geom.pixel_size)
    assert not m[pm != 0].any()
    # modules enclosed by the gap grid are not holes of the shadow
    yy, xx = np.mgrid[:400, :400]
    r = np.hypot(xx + 0.5 - 210.0, yy + 0.5 - 190.0)
    assert m[(r > 40) & (np.abs(yy + 0.5 - 190.0) > 12)].sum() == 0
    assert m[r < 25][pm[r < 25] == 0].mean() > 0.98


@pytest.mark.parametrize("pedestal", [0.0, 25.0])
def test_find_spots_drops_the_spot_in_the_shadow_and_keep_flags_it(pedestal):
    img, pm, geom, streak, outside = _frame(pedestal=pedestal)
    kw = dict(method="dispersion", pixel_mask=pm, geometry=geom, ice_rings="keep")
    if pedestal:
        kw["global_threshold"] = 0.0
    kept = find_spots(img, beamstop_shadow="keep", **kw)
    xy = kept.table.fast_slow()
    d_streak = np.hypot(*(xy - streak).T)
    assert d_streak.min() < 2 and kept.table["beamstop_shadow"][np.argmin(d_streak)]
    for x, y in outside:
        k = np.argmin(np.hypot(*(xy - (x, y)).T))
        assert np.hypot(*(xy[k] - (x, y))) < 1.5 and not kept.table["beamstop_shadow"][k]
    dropped = find_spots(img, **kw)
    xy2 = dropped.table.fast_slow()
    assert np.hypot(*(xy2 - streak).T).min() > 10
    assert dropped.table.n_spots == kept.table.n_spots - int(kept.table["beamstop_shadow"].sum())
    assert not dropped.table["beamstop_shadow"].any()
    # labels follow the table
    assert dropped.labels.max() == dropped.table.n_spots
    with pytest.raises(ValueError, match="beamstop_shadow"):
        find_spots(img, beamstop_shadow="filter", **kw)


def test_cli_drops_or_flags_the_shadowed_spot(tmp_path, capsys):
    import json

    from napari_xrd.cli import main

    img, _, _, streak, _ = _frame()
    path = tmp_path / "frame.npy"  # no geometry: the shadow is sought round the image's centre
    np.save(path, img.astype(np.int32))
    assert main(["spots", str(path), "--json", "--beamstop-shadow", "keep"]) == 0
    kept = json.loads(capsys.readouterr().out)
    flagged = [s for s in kept if s["beamstop_shadow"]]
    assert len(flagged) == 1 and np.hypot(flagged[0]["x"] - streak[0], flagged[0]["y"] - streak[1]) < 2
    assert main(["spots", str(path), "--json"]) == 0
    dropped = json.loads(capsys.readouterr().out)
    assert len(dropped) == len(kept) - 1 and not any(s["beamstop_shadow"] for s in dropped)


def test_the_penumbra_is_grown_a_little_not_into_dim_surroundings():
    img, pm, geom, _, _ = _frame(gaps=True, bright_band=True)
    m = beamstop_shadow_mask(img, pm == 0, beam_center=geom.beam_center, pixel_size=geom.pixel_size)
    yy, xx = np.mgrid[:400, :400]
    r = np.hypot(xx + 0.5 - 210.0, yy + 0.5 - 190.0)
    assert m[r < 25][pm[r < 25] == 0].mean() > 0.98
    assert m[(r > 40) & (np.abs(yy + 0.5 - 190.0) > 12)].sum() == 0  # ~1 mm (6 px here) at most, and the arm
