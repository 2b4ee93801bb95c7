"""The U-Net's second look on 2 x 2-binned pixels, for large faint spots (streaks)."""

import numpy as np
import pytest

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.spots import find_spots
from napari_xrd.core.spots.coarse import bin_frame, binned_geometry, wants_coarse_pass
from napari_xrd.core.spots.ice import ICE_RING_D
from napari_xrd.core.spots.metrics import match_spots
from napari_xrd.core.spots.table import SpotTable

GEOMETRY = DetectorGeometry(shape=(320, 320), pixel_size=0.172, distance=200.0, beam_center=(160.0, 160.0),
                            wavelength=1.0)


def _streaks(seed=0, *, n_bright=10, n_faint=10, faint=70.0, shape=(320, 320), sigma=(4.0, 1.4), background=2.0):
    """Poisson frame of streaks along the radius: bright ones (600 photons) and faint ones (SNR about 5)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]] + 0.5
    lam = np.full(shape, background)
    positions = []
    for photons in [600.0] * n_bright + [faint] * n_faint:
        y, x = rng.uniform(30, shape[0] - 30, 2)
        angle = np.arctan2(y - 160, x - 160)
        u = (xx - x) * np.cos(angle) + (yy - y) * np.sin(angle)
        v = -(xx - x) * np.sin(angle) + (yy - y) * np.cos(angle)
        lam += photons / (2 * np.pi * sigma[0] * sigma[1]) * np.exp(-(u / sigma[0]) ** 2 / 2 - (v / sigma[1]) ** 2 / 2)
        positions.append((x, y))
    return rng.poisson(lam).astype(np.float32), np.array(positions), n_bright


def test_bin_frame_sums_whole_bins_and_drops_partly_masked_ones():
    image = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    valid = np.ones(image.shape, bool)
    valid[0, 0] = False
    binned, ok = bin_frame(image, valid)
    assert binned.shape == ok.shape == (2, 3)  # the odd last row and column are left out
    assert binned[1, 2] == image[2:4, 4:6].sum()
    assert not ok[0, 0] and ok[1:, :].all() and ok[0, 1:].all()
    assert binned[0, 0] == image[0:2, 0:2].sum() - image[0, 0]  # the masked pixel is not added
    # any factor: each bin is the sum of its whole block; a bin with a masked pixel is not whole
    rng = np.random.default_rng(1)
    image, valid = rng.poisson(5.0, (11, 14)).astype(np.float32), rng.random((11, 14)) > 0.05
    binned, ok = bin_frame(image, valid, factor=3)
    blocks = np.where(valid, image, 0)[:9, :12].reshape(3, 3, 4, 3)
    np.testing.assert_array_equal(binned, blocks.sum(axis=(1, 3)))
    np.testing.assert_array_equal(ok, valid[:9, :12].reshape(3, 3, 4, 3).all(axis=(1, 3)))


@pytest.mark.parametrize("pitch, yaw", [(0.0, 0.0), (2.0, -1.5)])
def test_binned_geometry_sees_the_same_resolutions(pitch, yaw):
    g = GEOMETRY.replace(pitch=pitch, yaw=yaw, beam_center=(151.3, 167.8))
    gb = binned_geometry(g)
    assert gb.shape == (160, 160) and gb.pixel_size == pytest.approx(0.344)
    fast, slow = np.array([3.0, 57.5, 301.0]), np.array([10.0, 200.25, 318.0])
    np.testing.assert_allclose(gb.resolution_at(fast / 2, slow / 2), g.resolution_at(fast, slow), rtol=1e-9)


def _table(extent, d):
    n = len(d)
    return SpotTable(x=np.zeros(n), y=np.zeros(n), intensity=np.ones(n), background=np.zeros(n),
                     size=np.full(n, 9), peak=np.ones(n), d=np.asarray(d, float),
                     sigma_radial=np.full(n, extent), sigma_azimuthal=np.full(n, 1.0))


def test_auto_bins_frames_of_wide_spots():
    near = GEOMETRY.replace(distance=60.0)  # the detector reaches 2.3 Å: the 3.9 Å ice line lies on it
    d_low, d_high = near.d_range()
    rng = np.random.default_rng(1)
    d = 1 / rng.uniform(1 / d_low, 1 / d_high, 400)  # spread evenly in 1/d over the detector
    assert wants_coarse_pass(_table(2.6, d), geometry=near)
    assert not wants_coarse_pass(_table(1.2, d), geometry=near)  # narrow spots
    assert not wants_coarse_pass(_table(2.6, d), geometry=None)
    # with spotty ice too (find_spots then leaves the binned spots near the ice lines out)
    grains = np.full(120, ICE_RING_D[0]) * (1 + rng.normal(0, 2e-4, 120))
    assert wants_coarse_pass(_table(2.6, np.concatenate([d, grains])), geometry=near)


def _grains(image, geometry, rng, n=80, photons=400.0):
    """Compact bright blobs (ice grains) on the 3.90 Å ice line, at random azimuths."""
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]] + 0.5
    radius = geometry.radius_px_for_d(ICE_RING_D[0])
    lam = np.zeros(image.shape)
    for a in rng.uniform(0, 2 * np.pi, n):
        x, y = geometry.beam_center[0] + radius * np.cos(a), geometry.beam_center[1] + radius * np.sin(a)
        lam += photons / (2 * np.pi) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2)
    return image + rng.poisson(lam).astype(np.float32)


def _near_line(labels, image, geometry, margin):
    """Per label 1..n: whether its count-weighted centroid lies within ``margin`` (Å⁻¹) of an ice line."""
    from scipy import ndimage

    from napari_xrd.core.spots.ice import ice_line_distance

    n = int(labels.max())
    com = np.array(ndimage.center_of_mass(image, labels, np.arange(1, n + 1))).reshape(-1, 2)
    d = np.atleast_1d(geometry.resolution_at(com[:, 1] + 0.5, com[:, 0] + 0.5))
    return ice_line_distance(d) < margin


def test_binned_spots_near_an_ice_line_are_left_out_on_request():
    from scipy import ndimage

    from napari_xrd.core.spots.coarse import ICE_GRAIN_MARGIN, coarse_spot_mask

    near = GEOMETRY.replace(distance=60.0)  # ice lines from 3.9 Å to the corners' 2.3 Å cross the frame
    n_near = n_far = 0
    for seed in range(3):
        image, _, _ = _streaks(seed, n_bright=6, n_faint=24)
        found = np.zeros(image.shape, bool)
        every = coarse_spot_mask(image, found, geometry=near, device="cpu")
        kept = coarse_spot_mask(image, found, geometry=near, device="cpu", ice_line_margin=ICE_GRAIN_MARGIN)
        assert not (kept & ~every).any()
        labels, _ = ndimage.label(every)
        close = _near_line(labels, image, near, ICE_GRAIN_MARGIN)
        far = ~_near_line(labels, image, near, ICE_GRAIN_MARGIN + 0.002)  # clear of the margin's edge
        for k in range(1, labels.max() + 1):
            spot = labels == k
            if close[k - 1]:
                assert not kept[spot].any()
            elif far[k - 1]:
                assert kept[spot].all()
        n_near, n_far = n_near + int(close.sum()), n_far + int(far.sum())
    assert n_near >= 3 and n_far >= 3  # both kinds were there to be told apart


def test_auto_bins_a_frame_with_spotty_ice_away_from_the_ice_lines():
    from napari_xrd.core.spots.ice import contaminated_ice_shells, ice_line_distance

    near = GEOMETRY.replace(distance=60.0)
    image, _, _ = _streaks(0, n_bright=30, n_faint=20)
    # a dozen grains on the 3.9 Å line make it spotty (with more, or brighter, grains the network misses
    # the streaks themselves: its channel attention pools over whole 256-pixel tiles)
    image = _grains(image, near, np.random.default_rng(5), n=12, photons=150.0)
    opts = dict(method="unet", geometry=near, ice_rings="keep", beamstop_shadow="keep", device="cpu",
                ice_context="off")  # the binned pass alone (test_spots_ice_context covers the other look)
    off = find_spots(image, large_spots="off", **opts)
    assert len(contaminated_ice_shells(off.table["d"], geometry=near))  # spotty ice...
    assert wants_coarse_pass(off.table, geometry=near)  # ...and wide spots: "auto" bins
    auto = find_spots(image, large_spots="auto", **opts)
    added = auto.table["d"][off.table.n_spots:]
    assert len(added) >= 1 and np.all(ice_line_distance(added) >= 0.010)  # centroids of the full-resolution pixels


def test_binned_pass_finds_faint_streaks_and_keeps_the_first_pass_spots():
    gained, wrong = 0, 0
    for seed in range(5):
        image, truth, n_bright = _streaks(seed)
        off = find_spots(image, method="unet", geometry=GEOMETRY, large_spots="off", device="cpu")
        auto = find_spots(image, method="unet", geometry=GEOMETRY, large_spots="auto", device="cpu")
        assert wants_coarse_pass(off.table, geometry=GEOMETRY)  # the bright streaks are wide: "auto" bins
        found_off = match_spots(off.table.fast_slow(), truth)[1]
        found_auto = match_spots(auto.table.fast_slow(), truth)[1]
        assert found_off[:n_bright].all() and found_auto[:n_bright].all()
        assert (found_auto >= found_off).all()
        gained += int(found_auto[n_bright:].sum() - found_off[n_bright:].sum())
        wrong += int((~match_spots(auto.table.fast_slow(), truth)[0]).sum()
                     - (~match_spots(off.table.fast_slow(), truth)[0]).sum())
        # the first pass's spots come first, unchanged; labels and rows agree
        n = off.table.n_spots
        np.testing.assert_allclose(auto.table["x"][:n], off.table["x"])
        np.testing.assert_array_equal(auto.labels[off.labels > 0], off.labels[off.labels > 0])
        assert auto.labels.max() == auto.table.n_spots
    assert gained >= 2 and wrong <= 1  # of 50 faint streaks at SNR about 5


def test_narrow_spots_are_not_binned_and_bad_mode_is_refused():
    from tests.test_spots_cli import _image

    image = _image(3, shape=(320, 320), n_spots=20)
    off = find_spots(image, method="unet", geometry=GEOMETRY, large_spots="off", device="cpu")
    auto = find_spots(image, method="unet", geometry=GEOMETRY, device="cpu")
    np.testing.assert_array_equal(auto.labels, off.labels)
    with pytest.raises(ValueError, match="large_spots"):
        find_spots(image, method="unet", large_spots="maybe")


def test_new_binned_spots_are_those_clear_of_the_first_pass_pixels(monkeypatch):
    """Against the whole-frame reference: binned spots touching a found pixel or a 4-neighbour are not new."""
    from scipy import ndimage

    import napari_xrd.core.spots.inference as inference
    from napari_xrd.core.spots.coarse import coarse_spot_mask

    rng = np.random.default_rng(3)
    shape = (101, 99)  # odd: the last row and column lie outside every bin
    image = rng.poisson(3.0, shape).astype(np.float32)
    image[rng.random(shape) < 0.01] = np.nan
    image[rng.random(shape) < 0.01] = -1.0
    pixel_mask = (rng.random(shape) < 0.02).astype(np.uint32)
    found = rng.random(shape) < 0.004
    found[0, :3] = found[-1, -1] = found[50, 0] = True  # edges and the unbinned last row/column
    binned_prob = ndimage.gaussian_filter(rng.random((50, 49)), 1.0)
    binned_prob = (binned_prob > np.quantile(binned_prob, 0.7)).astype(np.float32)
    monkeypatch.setattr(inference, "predict_spot_probability", lambda *a, **k: binned_prob)
    valid = np.isfinite(image) & (image >= 0) & (pixel_mask == 0)
    binned = (*bin_frame(image, valid, 2), None)
    got = coarse_spot_mask(image, found, pixel_mask=pixel_mask, binned=binned)
    labels, n = ndimage.label(binned_prob > 0.5)
    assert n >= 5
    full = np.zeros(shape, np.int32)
    full[:100, :98] = np.repeat(np.repeat(labels, 2, 0), 2, 1)
    new = np.ones(n + 1, bool)
    new[0] = False
    new[np.unique(full[ndimage.binary_dilation(found) & (full > 0)])] = False
    assert 0 < new.sum() < n  # some binned spots are new, some touch the first pass
    np.testing.assert_array_equal(got, new[full] & valid)
