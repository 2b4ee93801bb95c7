"""Local capped taxicab distance map (bit-packed) and boundary weights."""

import numpy as np
import pytest
from scipy import ndimage

from napari_xrd.core.spots.distance_map import boundary_weight_map, local_distance_map, local_distance_map_torch


def _reference(mask, cap):
    return np.minimum(ndimage.distance_transform_cdt(~mask, metric="taxicab"), cap)


@pytest.mark.parametrize("shape", [(1, 1), (1, 130), (130, 1), (5, 64), (37, 65), (64, 127), (100, 200)])
@pytest.mark.parametrize("density", [0.002, 0.05, 0.5])
def test_exact_against_scipy_on_random_masks(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    mask = rng.random(shape) < density
    mask.flat[rng.integers(mask.size)] = True  # scipy needs one seed pixel
    for cap in (1, 2, 7, 8, 9, 31):
        got = local_distance_map(mask, max_distance=cap)
        assert got.dtype == np.uint8 and got.shape == shape
        np.testing.assert_array_equal(got, _reference(mask, cap))


def test_blobs_large_cap_and_edges():
    mask = np.zeros((70, 90), bool)
    mask[0, 0] = mask[69, 89] = True  # corners
    mask[30:34, 40:45] = True  # a blob
    np.testing.assert_array_equal(local_distance_map(mask, max_distance=255), _reference(mask, 255))


def test_empty_and_full_masks():
    assert np.all(local_distance_map(np.zeros((9, 70), bool), max_distance=6) == 6)
    assert np.all(local_distance_map(np.ones((9, 70), bool), max_distance=6) == 0)
    assert local_distance_map(np.zeros((0, 5), bool)).shape == (0, 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_distance"):
        local_distance_map(np.zeros((4, 4), bool), max_distance=0)
    with pytest.raises(ValueError, match="2-D"):
        local_distance_map(np.zeros(4, bool))


def test_torch_version_matches():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    masks = rng.random((3, 40, 50)) < 0.02
    masks[:, 0, 0] = True
    got = local_distance_map_torch(torch.from_numpy(masks), max_distance=8).numpy()
    for m, g in zip(masks, got):
        np.testing.assert_array_equal(g, _reference(m, 8))


def test_boundary_weights_peak_on_the_spot_edge():
    mask = np.zeros((30, 30), bool)
    mask[10:20, 10:20] = True
    w = boundary_weight_map(mask, max_distance=8, sigma=1.5, w0=4.0)
    assert w.dtype == np.float32
    assert w[9, 15] == pytest.approx(5.0) and w[10, 15] == pytest.approx(5.0)  # just out, just in
    assert w[15, 15] < w[11, 15] < w[10, 15]  # falls towards the centre
    assert w[0, 0] < w[5, 15] < w[9, 15]  # and away from the spot
    assert np.all(boundary_weight_map(np.zeros((5, 5), bool)) == 1.0)
