"""The U-Net's second look on frames with spotty ice, with the ice lines left out of its tile statistics."""

import numpy as np
import pytest

from napari_xrd.core.spots import find_spots
from napari_xrd.core.spots.ice import ICE_RING_D, ice_line_band, ice_line_distance
from napari_xrd.core.spots.ice_context import ICE_CONTEXT_MARGIN, ice_context_probability
from napari_xrd.core.spots.metrics import match_spots
from tests.test_spots_coarse import GEOMETRY, _grains, _streaks

NEAR = GEOMETRY.replace(distance=60.0)  # ice lines from 3.9 Å to the corners' 2.3 Å cross the 320-pixel frame


@pytest.mark.parametrize("pitch, yaw", [(0.0, 0.0), (3.0, -2.0)])
def test_ice_line_band_holds_the_pixels_near_an_ice_line(pitch, yaw):
    g = NEAR.replace(pitch=pitch, yaw=yaw, beam_center=(141.3, 177.8))
    band = ice_line_band(g, margin=0.006)
    distance = ice_line_distance(g.d_spacing_map().ravel()).reshape(g.shape)
    clear = np.abs(distance - 0.006) > 1e-5  # float32 radii may round the other way at the very edge
    np.testing.assert_array_equal(band[clear], (distance < 0.006)[clear])
    assert 0.05 < band.mean() < 0.6  # several lines cross the frame, and not everywhere
    assert not ice_line_band(g, margin=0.0).any()
    assert ice_line_band(g, margin=0.006, ice_d=[ICE_RING_D[0]]).sum() < band.sum()
    with pytest.raises(ValueError, match="margin"):
        ice_line_band(g, margin=-0.01)


def test_excluded_pixels_do_not_set_the_attention_gains():
    import torch

    from napari_xrd.core.models.weights import load_model

    net, _ = load_model("default", task="spots", device="cpu")
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(0, 1, (1, 2, 256, 256)).astype(np.float32))
    x[:, 1] = 1.0
    brighter = x.clone()
    brighter[:, 0, :32] += 8.0  # bright content in the top rows only
    weight = torch.ones(1, 1, 256, 256)
    weight[:, :, :128] = 0.0  # left out of the pooled statistics: the top half
    with torch.no_grad():
        np.testing.assert_array_equal(net(x, torch.ones_like(weight)).numpy(), net(x).numpy())
        far = (slice(None), slice(None), slice(224, 256))  # beyond the convolutions' reach from the top rows
        assert not torch.allclose(net(x)[far], net(brighter)[far], atol=1e-4)  # the whole-tile statistics moved
        torch.testing.assert_close(net(x, weight)[far], net(brighter, weight)[far], atol=1e-5, rtol=0)


def _spotty_frame(seed):
    image, truth, _ = _streaks(seed, n_bright=30, n_faint=0)
    image = _grains(image, NEAR, np.random.default_rng(seed + 5), n=40, photons=400.0)
    far = ice_line_distance(np.atleast_1d(NEAR.resolution_at(truth[:, 0], truth[:, 1]))) >= 0.015
    return image, truth[far]


def test_second_look_finds_streaks_that_grains_hid_and_leaves_the_ice_lines_to_the_first_pass():
    opts = dict(method="unet", geometry=NEAR, ice_rings="keep", beamstop_shadow="keep", device="cpu",
                large_spots="off")
    for seed in range(3):
        image, truth = _spotty_frame(seed)
        off = find_spots(image, ice_context="off", **opts)
        auto = find_spots(image, ice_context="auto", **opts)
        # 40 bright grains on the 3.9 Å line damp the whole tile: the first pass misses the streaks
        assert match_spots(off.table.fast_slow(), truth)[1].mean() <= 0.1
        assert match_spots(auto.table.fast_slow(), truth)[1].mean() >= 0.75
        # well inside the bands about the ice lines, the spots are the first pass's
        inside = [ice_line_distance(r.table["d"]) < ICE_CONTEXT_MARGIN - 0.004 for r in (off, auto)]
        assert inside[0].sum() >= 10  # the grains
        # (a grain reaching out of its band takes its outer pixels from the second pass)
        np.testing.assert_allclose(np.sort(auto.table["x"][inside[1]]), np.sort(off.table["x"][inside[0]]), atol=1.0)
        assert auto.labels.max() == auto.table.n_spots


def test_second_look_runs_only_on_spotty_ice_unless_asked():
    from napari_xrd.core.spots.inference import predict_spot_probability

    image, _, _ = _streaks(1, n_bright=30, n_faint=0)  # no grains
    opts = dict(method="unet", geometry=NEAR, device="cpu", large_spots="off")
    off = find_spots(image, ice_context="off", **opts)
    auto = find_spots(image, ice_context="auto", **opts)
    np.testing.assert_array_equal(auto.labels, off.labels)
    first = predict_spot_probability(image, geometry=NEAR, device="cpu")
    both = ice_context_probability(image, first, geometry=NEAR, device="cpu")
    band = ice_line_band(NEAR, margin=ICE_CONTEXT_MARGIN)
    np.testing.assert_array_equal(both[band], first[band])
    assert (both[~band] > 0.5).sum() > 100  # the streaks away from the lines
    with pytest.raises(ValueError, match="ice_context"):
        find_spots(image, method="unet", ice_context="maybe")
    with pytest.raises(ValueError, match="probability shape"):
        ice_context_probability(image, first[:10], geometry=NEAR, device="cpu")


def test_cli_ice_context_option(tmp_path, capsys):
    import json

    from napari_xrd.cli import main
    from napari_xrd.core.io.nexus import write_nexus

    image, truth = _spotty_frame(0)
    path = tmp_path / "spotty_master.h5"
    write_nexus(path, image[None].astype(np.uint32), NEAR, compression=None)
    found = {}
    for mode in ("off", "auto"):
        args = ["spots", str(path), "--method", "unet", "--device", "cpu", "--json", "--ice-rings", "keep",
                "--large-spots", "off", "--ice-context", mode]
        assert main(args) == 0
        spots = json.loads(capsys.readouterr().out)
        xy = np.array([(s["x"], s["y"]) for s in spots]).reshape(-1, 2)
        found[mode] = match_spots(xy, truth)[1].mean()
    assert found["auto"] >= found["off"] + 0.5
    with pytest.raises(SystemExit):
        main(["spots", str(path), "--ice-context", "maybe"])


def test_pool_exclusion_on_both_input_paths():
    from napari_xrd.core.spots.inference import predict_spot_probability

    image, _ = _spotty_frame(0)
    band = ice_line_band(NEAR, margin=ICE_CONTEXT_MARGIN)
    opts = dict(geometry=NEAR, device="cpu", pool_exclusion=band)
    numpy_path = predict_spot_probability(image, input_on_device=False, **opts) > 0.5
    torch_path = predict_spot_probability(image, input_on_device=True, **opts) > 0.5  # the GPU's path
    blind = predict_spot_probability(image, geometry=NEAR, device="cpu", input_on_device=True) > 0.5
    assert (numpy_path != torch_path).mean() < 1e-3  # float32 medians differ a little between the paths
    assert (torch_path & ~band).sum() > 2 * (blind & ~band).sum()  # the exclusion took effect there too
    with pytest.raises(ValueError, match="pool_exclusion shape"):
        predict_spot_probability(image, device="cpu", pool_exclusion=band[:10])
    # excluding nothing is the first pass, to the bit (the padding about the frame counts in both)
    first, background = predict_spot_probability(image, geometry=NEAR, device="cpu", return_background=True)
    same = predict_spot_probability(image, geometry=NEAR, device="cpu", pool_exclusion=np.zeros(image.shape, bool))
    np.testing.assert_array_equal(same, first)
    # the first pass's background serves a second pass unchanged
    assert background is not None and background.shape == image.shape
    again = predict_spot_probability(image, geometry=NEAR, device="cpu", pool_exclusion=band, background=background)
    np.testing.assert_array_equal(again, predict_spot_probability(image, **opts, input_on_device=False))
    with pytest.raises(ValueError, match="background shape"):
        predict_spot_probability(image, geometry=NEAR, device="cpu", background=background[:10])
