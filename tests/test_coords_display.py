"""Coordinate conventions, masks and display choices."""

import numpy as np
import pytest

from napari_xrd.core import masks
from napari_xrd.core.coords import dials_to_napari, napari_to_dials
from napari_xrd.core.detectors import DETECTORS, get_detector, identify_detector
from napari_xrd.core.display import HEXAGONAL_ICE_D_SPACINGS, auto_contrast, log_ramp, resolution_ring_d_spacings
from napari_xrd.core.geometry import DetectorGeometry


def test_first_pixel_centre_maps_to_napari_origin():
    assert dials_to_napari([0.5, 0.5]).tolist() == [0.0, 0.0]
    # (fast, slow) -> (row=slow, col=fast)
    assert dials_to_napari([[10.5, 3.5]]).tolist() == [[3.0, 10.0]]
    pts = np.random.default_rng(0).uniform(0, 100, (20, 2))
    assert np.allclose(napari_to_dials(dials_to_napari(pts)), pts)
    # a frame index in front of napari coordinates is ignored
    assert napari_to_dials([7.0, 3.0, 10.0]).tolist() == [10.5, 3.5]


def test_mask_from_values_for_cbf_and_eiger_markers():
    cbf = np.array([[0, -1, 5], [-2, 10, 3]], dtype=np.int32)
    m = masks.mask_from_values(cbf)
    assert m.tolist() == [[0, masks.GAP, 0], [masks.DEAD, 0, 0]]
    eiger = np.array([[1, 65535]], dtype=np.uint16)
    assert masks.mask_from_values(eiger).tolist() == [[0, masks.DEAD]]
    flt = np.array([[np.nan, 1.0, -1.0]])
    assert masks.mask_from_values(flt).tolist() == [[masks.DEAD, 0, masks.GAP]]
    assert masks.describe_mask(m) == {"gap": 1, "dead": 1}
    assert masks.valid_pixels(m).sum() == 4
    # with the image: its non-finite and negative values are invalid too, masked or not
    img = np.array([[np.nan, 2.0, -1.0], [np.inf, 0.0, 3.0]])
    assert masks.valid_pixels(None, image=img).tolist() == [[False, True, False], [False, True, True]]
    assert masks.valid_pixels(m, image=img).tolist() == [[False, False, False], [False, True, True]]


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_layout(name):
    det = get_detector(name)
    nf, ns = det.n_modules
    assert nf * det.module_fast + (nf - 1) * det.gap_fast == det.n_fast
    assert ns * det.module_slow + (ns - 1) * det.gap_slow == det.n_slow
    gm = det.gap_mask()
    expected_gap = det.n_fast * det.n_slow - nf * ns * det.module_fast * det.module_slow
    assert np.count_nonzero(gm) == expected_gap
    # every module origin is a valid (non-gap) pixel
    for f0, s0 in det.module_origins():
        assert gm[s0, f0] == 0
    assert identify_detector(det.shape, det.pixel_size) is det
    small = det.gap_mask((256, 256))
    assert small.shape == (256, 256)
    if det.gap_fast:
        assert np.count_nonzero(small.any(axis=0) & (small.sum(axis=0) == 256)) >= nf - 1


def test_pilatus_numbers_from_the_spec():
    det = get_detector("Pilatus 6M")
    assert det.shape == (2527, 2463) and det.n_modules == (5, 12)
    eig = get_detector("eiger16m")
    assert eig.shape == (4371, 4150) and eig.n_modules == (4, 8)
    with pytest.raises(ValueError, match="unknown detector"):
        get_detector("mar345")


def test_auto_contrast_ignores_masked_and_marker_pixels():
    rng = np.random.default_rng(1)
    frame = rng.poisson(20, (300, 300)).astype(np.int32)
    frame[:, 100:110] = -1
    frame[5, 5] = 10**6  # one hot pixel
    lo, hi = auto_contrast(frame)
    assert 5 <= lo < 20 < hi < 60
    valid = np.ones(frame.shape, bool)
    valid[:150] = False
    lo2, hi2 = auto_contrast(frame, valid)
    assert lo2 < hi2
    assert auto_contrast(np.zeros((4, 4))) [1] > auto_contrast(np.zeros((4, 4)))[0]


def test_resolution_rings_fit_the_image():
    g = DetectorGeometry((2304, 2304), 0.0816, 250.0, (1160.5, 1216.9), 1.0)
    ds = resolution_ring_d_spacings(g)
    assert ds == sorted(ds, reverse=True) and len(ds) >= 4
    _, d_corner = g.d_range()
    assert min(ds) >= d_corner * 0.95
    assert HEXAGONAL_ICE_D_SPACINGS[0] == 3.895 and len(HEXAGONAL_ICE_D_SPACINGS) == 11


def test_log_ramp_is_monotonic_from_0_to_1():
    r = log_ramp(64)
    assert r[0] == 0.0 and r[-1] == pytest.approx(1.0) and np.all(np.diff(r) > 0)
    assert r[6] > 6 / 63  # brighter than linear at the low end
