"""Dispersion spot finder (DIALS dispersion / dispersion_extended) and the spot table."""

import numpy as np
import pytest

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.masks import DEAD, GAP
from napari_xrd.core.spots import find_spots
from napari_xrd.core.spots.dispersion import dispersion_threshold, label_spots


def _reference_dispersion(img, valid, k, gain, nsig_b, nsig_s, min_local, thr):
    """Pixel-by-pixel statement of the DIALS dispersion test (slow, for checking)."""
    ny, nx = img.shape
    out = np.zeros_like(valid)
    for j in range(ny):
        for i in range(nx):
            if not valid[j, i]:
                continue
            win = img[max(j - k, 0) : j + k + 1, max(i - k, 0) : i + k + 1]
            w = valid[max(j - k, 0) : j + k + 1, max(i - k, 0) : i + k + 1]
            v = win[w]
            n = v.size
            if n < min_local or v.sum() < 0 or img[j, i] <= thr:
                continue
            mean = v.mean()
            var = v.var(ddof=1)
            disp = var / mean > gain * (1 + nsig_b * np.sqrt(2.0 / (n - 1))) if mean > 0 else False
            strong = img[j, i] - mean > nsig_s * np.sqrt(gain * mean)
            out[j, i] = disp and strong
    return out


def _reference_extended(img, valid, k, gain, nsig_b, nsig_s, min_local, thr):
    ny, nx = img.shape
    flagged = np.zeros_like(valid)
    for j in range(ny):
        for i in range(nx):
            if not valid[j, i]:
                continue
            w = valid[max(j - k, 0) : j + k + 1, max(i - k, 0) : i + k + 1]
            v = img[max(j - k, 0) : j + k + 1, max(i - k, 0) : i + k + 1][w]
            n = v.size
            if n < min_local or v.sum() < 0:
                continue
            mean = v.mean()
            flagged[j, i] = mean > 0 and v.var(ddof=1) / mean > gain * (1 + nsig_b * np.sqrt(2.0 / (n - 1)))
    core = np.zeros_like(valid)
    r = k - 1
    for j in range(ny):
        for i in range(nx):
            core[j, i] = flagged[max(j - r, 0) : j + r + 1, max(i - r, 0) : i + r + 1].all()
    bg = valid & ~core
    out = np.zeros_like(valid)
    k2 = k + 2
    for j in range(ny):
        for i in range(nx):
            if not (valid[j, i] and core[j, i] and img[j, i] > thr):
                continue
            w = bg[max(j - k2, 0) : j + k2 + 1, max(i - k2, 0) : i + k2 + 1]
            v = img[max(j - k2, 0) : j + k2 + 1, max(i - k2, 0) : i + k2 + 1][w]
            mean = v.mean() if v.size >= 2 else 0.0
            out[j, i] = img[j, i] >= mean + nsig_s * np.sqrt(gain * mean)
    return out


def _spot_image(shape=(96, 128), n_spots=12, background=10.0, amplitude=400.0, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lam = np.full(shape, background)
    centres = []
    while len(centres) < n_spots:
        c = rng.uniform([8, 8], [shape[0] - 8, shape[1] - 8])
        if all(np.hypot(*(c - d)) > 10 for d in centres):
            centres.append(c)
    for cy, cx in centres:
        lam += amplitude / (2 * np.pi * 1.0**2) * np.exp(-((yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2) / 2.0)
    return rng.poisson(lam).astype(np.int32), np.array(centres)


@pytest.mark.parametrize("algorithm", ["dispersion", "dispersion_extended"])
def test_matches_pixelwise_statement_of_dials_tests(algorithm):
    img, _ = _spot_image(shape=(30, 34), n_spots=3, seed=3)
    rng = np.random.default_rng(1)
    pixel_mask = np.zeros(img.shape, np.uint32)
    pixel_mask[rng.random(img.shape) < 0.05] = DEAD
    pixel_mask[:, 15] = GAP
    img[pixel_mask != 0] = 10**6  # masked pixels must not influence anything
    valid = pixel_mask == 0
    ref = (_reference_dispersion if algorithm == "dispersion" else _reference_extended)(
        img.astype(float), valid, 3, 1.0, 6.0, 3.0, 2, 0.0
    )
    got = dispersion_threshold(img, pixel_mask=pixel_mask, algorithm=algorithm)
    assert ref.any()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("algorithm", ["dispersion", "dispersion_extended"])
def test_finds_every_synthetic_spot_and_nothing_else(algorithm):
    img, centres = _spot_image(seed=5)
    res = find_spots(img, method="dispersion", algorithm=algorithm)
    found = res.table.fast_slow()
    assert len(found) == len(centres)
    # centroids (fast, slow) in the corner convention vs true (slow, fast) centres
    dist = np.hypot(found[:, None, 0] - centres[None, :, 1], found[:, None, 1] - centres[None, :, 0])
    assert np.all(dist.min(axis=1) < 0.5)


def test_pure_poisson_noise_gives_no_spots():
    rng = np.random.default_rng(2)
    img = rng.poisson(30.0, (200, 200))
    assert find_spots(img).table.n_spots == 0


def test_masked_pixels_never_become_spots_or_bias_neighbours():
    img, centres = _spot_image(seed=7)
    pixel_mask = np.zeros(img.shape, np.uint32)
    cy, cx = centres[0].astype(int)
    pixel_mask[cy - 3 : cy + 4, cx - 3 : cx + 4] = GAP  # hide one spot
    pixel_mask[5:8, 5:8] = DEAD
    img[5:8, 5:8] = 50000  # a hot masked cluster
    res = find_spots(img, pixel_mask=pixel_mask)
    assert not np.any(res.labels[pixel_mask != 0])
    assert res.table.n_spots == len(centres) - 1


def test_gain_and_global_threshold_reduce_detections():
    img, _ = _spot_image(amplitude=150.0, seed=11)
    assert dispersion_threshold(img).any()
    n1 = int(dispersion_threshold(img).sum())
    assert int(dispersion_threshold(img, gain=3.0).sum()) < n1
    assert int(dispersion_threshold(img, global_threshold=1e9).sum()) == 0


def test_size_filter_and_labels():
    strong = np.zeros((20, 20), bool)
    strong[2, 2] = True  # 1 px
    strong[5:7, 5:7] = True  # 4 px
    strong[10, 10:13] = True  # 3 px
    strong[11, 13] = True  # diagonal: a separate 4-connected spot of 1 px
    labels = label_spots(strong, min_spot_size=3, max_spot_size=3)
    assert labels.max() == 1
    assert np.array_equal(np.argwhere(labels == 1), [[10, 10], [10, 11], [10, 12]])


def test_table_centroid_corner_convention_and_resolution():
    img = np.zeros((40, 50), np.int32)
    img[10, 20] = 100
    img[30, 7:9] = [10, 30]
    labels = label_spots(img > 0, min_spot_size=1)
    geom = DetectorGeometry(shape=(40, 50), pixel_size=0.172, distance=100.0, beam_center=(25.0, 20.0), wavelength=1.0)
    res_table = find_spots(img, min_spot_size=1, global_threshold=1e9).table
    assert res_table.n_spots == 0
    from napari_xrd.core.spots import spot_table

    t = spot_table(labels, img, geometry=geom)
    np.testing.assert_allclose(t["x"], [20.5, 7.5 + 30 / 40])
    np.testing.assert_allclose(t["y"], [10.5, 30.5])
    np.testing.assert_allclose(t["intensity"], [100, 40])
    np.testing.assert_array_equal(t["size"], [1, 2])
    np.testing.assert_allclose(t["d"], geom.resolution_at(t["x"], t["y"]))
    rows = t.rows()
    assert rows[0]["x"] == 20.5 and rows[0]["size"] == 1 and rows[0]["background"] is None
    bg = spot_table(labels, img, background=np.full(img.shape, 2.0))
    np.testing.assert_allclose(bg["background"], [2.0, 4.0])


def test_table_radial_and_azimuthal_extent():
    # two Gaussian streaks, one radial and one azimuthal (σ 3 px along, 1 px across), on either
    # side of the beam centre; a tilted 45° one is the same along and across
    geom = DetectorGeometry(shape=(200, 200), pixel_size=0.172, distance=100.0, beam_center=(100.0, 100.0),
                            wavelength=1.0)
    yy, xx = np.mgrid[0:200, 0:200] + 0.5
    img = np.zeros((200, 200))
    img += 1000 * np.exp(-0.5 * (((xx - 160.5) / 3.0) ** 2 + ((yy - 100.5) / 1.0) ** 2))  # radial (on the +fast axis)
    img += 1000 * np.exp(-0.5 * (((xx - 100.5) / 3.0) ** 2 + ((yy - 30.5) / 1.0) ** 2))  # azimuthal (above the beam)
    labels = label_spots(img > 1.0, min_spot_size=1)
    from napari_xrd.core.spots import spot_table

    t = spot_table(labels, img, geometry=geom)
    order = np.argsort(t["y"])  # azimuthal streak first
    np.testing.assert_allclose(t["sigma_radial"][order], [1.0, 3.0], rtol=0.1)
    np.testing.assert_allclose(t["sigma_azimuthal"][order], [3.0, 1.0], rtol=0.1)
    assert t.rows()[0]["sigma_radial"] > 0
    no_geom = spot_table(labels, img)
    assert np.all(np.isnan(no_geom["sigma_radial"])) and no_geom.rows()[0]["sigma_azimuthal"] is None


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="2-D"):
        find_spots(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="pixel_mask shape"):
        find_spots(np.zeros((8, 8)), pixel_mask=np.zeros((4, 4), np.uint32))
    with pytest.raises(ValueError, match="unknown method"):
        find_spots(np.zeros((8, 8)), method="magic")
    with pytest.raises(ValueError, match="kernel_size"):
        dispersion_threshold(np.zeros((8, 8)), kernel_size=0)


def test_nan_pixels_are_treated_as_masked():
    img, centres = _spot_image(seed=13)
    img = img.astype(float)
    img[0:4, 0:4] = np.nan
    res = find_spots(img)
    assert res.table.n_spots == len(centres)
    assert not res.labels[0:4, 0:4].any()


@pytest.mark.realdata
def test_real_adsc_frame_spots_are_sensible():
    from pathlib import Path

    from napari_xrd.core.io import open_image

    image = open_image(Path(__file__).resolve().parents[1] / "sample_data" / "adsc_q4_lysozyme_2002.img.bz2")
    res = find_spots(image.frame(0), geometry=image.geometry, pixel_mask=image.pixel_mask)
    t = res.table
    assert 50 < t.n_spots < 1000  # a lysozyme still: a few hundred strong spots at most
    assert not res.labels[image.pixel_mask != 0].any()  # nothing in the CCD seams
    assert np.all(t["d"] > 1.0) and np.all(t["intensity"] > 0)
    # spots are compact: most have a handful of pixels
    assert np.median(t["size"]) < 30


def test_ice_ring_filter_drops_spots_on_ice_rings_only():
    from napari_xrd.core.spots import ICE_RING_D, ice_ring_spots

    geom = DetectorGeometry(shape=(400, 400), pixel_size=0.172, distance=80.0, beam_center=(200.0, 200.0),
                            wavelength=1.0)
    img = np.random.default_rng(0).poisson(5.0, (400, 400)).astype(np.float32)
    r_ice = geom.radius_px_for_d(ICE_RING_D[0])
    r_off = geom.radius_px_for_d(3.0)
    for ang in np.linspace(0, 2 * np.pi, 8, endpoint=False):
        for r in (r_ice, r_off):
            x, y = 200 + r * np.cos(ang), 200 + r * np.sin(ang)
            img[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] += 200
    plain = find_spots(img, geometry=geom, ice_rings="keep")
    filtered = find_spots(img, geometry=geom, ice_rings="filter")
    assert plain.table.n_spots == 16 and filtered.table.n_spots == 8
    assert np.all(np.abs(filtered.table["d"] - 3.0) < 0.05)
    assert not filtered.table["ice_ring"].any()
    assert filtered.labels.max() == 8 and set(np.unique(filtered.labels)) == set(range(9))
    assert ice_ring_spots([3.895, 3.0, np.inf]).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="geometry"):
        find_spots(img, ice_rings="filter")
    with pytest.raises(ValueError, match="ice_rings"):
        find_spots(img, geometry=geom, ice_rings="drop")
