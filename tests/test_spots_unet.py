"""Attention U-Net, input normalisation, tiled inference, loss, training loop, weights."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_xrd.core.models.attention_unet import build_attention_unet  # noqa: E402
from napari_xrd.core.models.weights import WeightsError, load_model, save_model  # noqa: E402
from napari_xrd.core.spots import find_spots  # noqa: E402
from napari_xrd.core.spots.inference import predict_spot_probability, prepare_input  # noqa: E402
from napari_xrd.core.training.spots import (  # noqa: E402
    SpotTrainingConfig,
    _make_batch,
    distance_weighted_loss,
    ice_grain_ignore_mask,
    sample_crops,
    train_spot_model,
)

TINY = {"channels": [4, 8], "full_res_convs": 1, "stem": 2}


def synth_frame(shape=(160, 176), n=25, seed=0):
    """Poisson background with a ring, a gap and Gaussian spots; returns image, pixel_mask, spot_mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(yy - shape[0] * 0.4, xx - shape[1] * 0.55)
    lam = 5 + 20 * np.exp(-r / 200) + 30 * np.exp(-(((r - 60) / 3) ** 2))
    spots = np.zeros(shape, bool)
    for _ in range(n):
        y, x = rng.uniform(5, shape[0] - 5), rng.uniform(5, shape[1] - 5)
        g = rng.uniform(80, 500) / (2 * np.pi) * np.exp(-((yy + 0.5 - y) ** 2 + (xx + 0.5 - x) ** 2) / 2)
        lam += g
        spots |= g > 2.0
    pm = np.zeros(shape, np.uint32)
    pm[:, 80:83] = 1
    return rng.poisson(lam).astype(np.float32), pm, spots & (pm == 0)


class ValidChannel(torch.nn.Module):
    """Logit +10 on valid pixels, -10 elsewhere: exposes how tiles are placed."""

    multiple = 1

    def forward(self, x):
        return (x[:, 1:2] * 2 - 1) * 10


def test_model_shapes_size_and_stride():
    for stem in (1, 2):
        net = build_attention_unet(channels=(4, 8, 16), stem=stem).eval()
        x = torch.randn(2, 2, 64, 96)
        assert net(x).shape == (2, 1, 64, 96)
        assert net.multiple == stem * 4
    default = build_attention_unet(channels=(16, 32, 64, 96), full_res_convs=2, stem=2)
    n_bytes = 4 * sum(p.numel() for p in default.parameters())
    assert n_bytes < 4e6  # shipped weights stay a few MB


@pytest.mark.parametrize("normalisation", ["tile", "local"])
def test_prepare_input_masks_and_is_gain_invariant(normalisation):
    img, pm, _ = synth_frame()
    valid = pm == 0
    x = prepare_input(img, valid, normalisation=normalisation)
    assert x.shape == (2,) + img.shape and x.dtype == np.float32
    assert np.all(x[0][~valid] == 0) and np.array_equal(x[1], valid)
    # a CCD-like response (gain 3, pedestal 40) changes the counts, not the picture
    x3 = prepare_input(img * 3 + 40, valid, normalisation=normalisation)
    bg = valid & (img < np.percentile(img, 90))
    assert abs(np.median(x3[0][bg]) - np.median(x[0][bg])) < 0.3
    nan = np.full((8, 8), np.nan)
    assert np.all(np.isfinite(prepare_input(nan, np.ones((8, 8), bool), normalisation=normalisation)))
    with pytest.raises(ValueError, match="normalisation"):
        prepare_input(img, valid, normalisation="global")


def test_local_normalisation_keeps_a_spot_on_a_ring_as_sharp_as_on_flat_background():
    """The tile median/MAD inflates the noise scale where a tile crosses a ring; the local one does not."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:256, :256]
    ring = 60 * np.exp(-0.5 * ((np.hypot(yy + 300, xx - 128) - 440) / 30) ** 2)  # a broad water-like ring
    lam = 3 + 0.05 * xx + ring
    spot = 150 / (2 * np.pi) * np.exp(-((yy - 140) ** 2 + (xx - 128) ** 2) / 2)  # on the ring's crest
    img = rng.poisson(lam + spot).astype(np.float32)
    valid = np.ones(img.shape, bool)
    valid[:, 40:47] = False  # a module gap
    local = prepare_input(img, valid, normalisation="local")[0]
    tile = prepare_input(img, valid, normalisation="tile")[0]
    far = valid & (np.hypot(yy - 140, xx - 128) > 8)
    # background: unit noise about 0 everywhere, ring and gradient included
    assert abs(np.median(local[far])) < 0.2 and 0.8 < np.std(local[far]) < 1.25
    contrast = lambda x: x[139:142, 127:130].mean() - np.median(x[130:150, 110:120])  # noqa: E731
    assert contrast(local) > 1.5 * contrast(tile)  # the tile's scale is inflated by the ring and the gradient


@pytest.mark.parametrize("normalisation", ["local", "tile"])
def test_torch_input_normalisation_matches_numpy(normalisation):
    """The batch version for the GPU gives the NumPy version's input, gaps, masked blocks and all."""
    from napari_xrd.core.spots.device_input import prepare_input_batch

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:256, :256]
    tiles, valids = [], []
    for k in range(4):
        lam = 4 + 50 * np.exp(-0.5 * ((np.hypot(yy + 300, xx - 128) - 440) / 20) ** 2) + 0.03 * k * xx
        lam = lam + 200 / (2 * np.pi) * np.exp(-((yy - 60 - 30 * k) ** 2 + (xx - 90) ** 2) / 2)
        img = rng.poisson(lam * (0.03 if k == 3 else 1.0)).astype(np.float32)  # the last one nearly empty
        v = rng.random((256, 256)) > 0.01
        v[:, 100:107] = False
        if k == 2:
            v[:, 200:] = False  # whole blocks without a valid pixel
        tiles.append(img)
        valids.append(v)
    ref = np.stack([prepare_input(t, v, normalisation=normalisation) for t, v in zip(tiles, valids)])
    got = prepare_input_batch(torch.from_numpy(np.stack(tiles)), torch.from_numpy(np.stack(valids)),
                              normalisation=normalisation).numpy()
    np.testing.assert_array_equal(got[:, 1], ref[:, 1])
    assert np.abs(got - ref).max() < 0.05  # background noise has unit scale
    with pytest.raises(ValueError, match="normalisation"):
        prepare_input_batch(torch.zeros(1, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool), normalisation="x")


def test_inference_with_the_input_on_the_device_matches_the_numpy_path():
    img, pm, _ = synth_frame(shape=(300, 280))
    a = predict_spot_probability(img, pixel_mask=pm, device="cpu")
    b = predict_spot_probability(img, pixel_mask=pm, device="cpu", input_on_device=True)
    assert b.dtype == np.float32 and b.shape == a.shape
    assert np.abs(a - b).max() < 0.1 and not b[pm != 0].any()
    ma, mb = a > 0.5, b > 0.5
    assert ma.any() and (ma & mb).sum() / (ma | mb).sum() > 0.97


@pytest.mark.parametrize("shape", [(37, 50), (300, 270), (256, 256)])
def test_tiles_cover_every_pixel_once_and_masked_pixels_are_zero(shape):
    rng = np.random.default_rng(0)
    img = rng.poisson(5, shape).astype(np.float32)
    pm = (rng.random(shape) < 0.1).astype(np.uint32)
    p = predict_spot_probability(img, pixel_mask=pm, model=ValidChannel(), device="cpu", tile=64, margin=8, batch_size=3)
    assert p.shape == shape
    np.testing.assert_array_equal(p > 0.5, pm == 0)


def test_tiled_inference_is_seamless_for_a_local_model():
    """A trained-like local model gives the same answer tiled or whole (away from normalisation)."""
    net = build_attention_unet(channels=(4, 8), stem=1, attention=False).eval()
    img, pm, _ = synth_frame(shape=(128, 128))
    whole = predict_spot_probability(img, pixel_mask=pm, model=net, device="cpu", tile=160, margin=16)
    # same per-tile normalisation when every tile sees the same statistics: use a flat image
    flat = np.full((128, 128), 10.0, np.float32)
    flat[::9, ::7] = 200.0
    a = predict_spot_probability(flat, model=net, device="cpu", tile=160, margin=16)
    b = predict_spot_probability(flat, model=net, device="cpu", tile=48, margin=12)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert whole.shape == img.shape


def test_loss_prefers_the_right_answer_and_ignores_masked_pixels():
    t = torch.zeros(1, 1, 32, 32)
    t[..., 10:14, 10:14] = 1
    w = torch.ones_like(t)
    v = torch.ones_like(t)
    good = distance_weighted_loss((t * 2 - 1) * 8, t, w, v)
    bad = distance_weighted_loss(-(t * 2 - 1) * 8, t, w, v)
    assert good < 0.05 < bad
    v2 = v.clone()
    v2[..., 10:14, 10:14] = 0  # the wrong pixels are masked: they must not count
    wrong_there = (t * 2 - 1) * 8
    wrong_there[..., 10:14, 10:14] = -8
    assert distance_weighted_loss(wrong_there, t, w, v2) < 1.05


def test_sample_crops_pads_small_frames_and_finds_spots():
    img, pm, spots = synth_frame(shape=(40, 50))
    crops = sample_crops(img, pm, spots, crop=64, n=5, spot_fraction=1.0, rng=np.random.default_rng(0))
    assert all(c[0].shape == (64, 64) for c in crops)
    assert not crops[0][1][45:, :].any()  # padding is invalid


def _ice_grain_frame(seed=0):
    """400 x 400 frame: a smooth ice ring (3.669 Å), 30 grains on the 3.895 Å ring, Bragg spots on and off it."""
    from napari_xrd.core.geometry import DetectorGeometry
    from napari_xrd.core.spots.ice import ICE_RING_D

    geom = DetectorGeometry(shape=(400, 400), pixel_size=0.172, distance=80.0, beam_center=(200.0, 200.0),
                            wavelength=1.0)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:400, :400]
    r = np.hypot(xx + 0.5 - 200, yy + 0.5 - 200)
    lam = 5.0 + 25.0 * np.exp(-0.5 * ((r - geom.radius_px_for_d(ICE_RING_D[1])) / 1.5) ** 2)
    grains, spots = np.zeros((400, 400), bool), np.zeros((400, 400), bool)
    r0 = geom.radius_px_for_d(ICE_RING_D[0])
    for ang in np.linspace(0, 2 * np.pi, 30, endpoint=False):
        x, y = int(200 + r0 * np.cos(ang)), int(200 + r0 * np.sin(ang))
        lam[y - 1 : y + 2, x - 1 : x + 2] += 150
        grains[y - 1 : y + 2, x - 1 : x + 2] = True
    for ang, d in [(0.05, ICE_RING_D[0]), (1.0, 5.0), (2.5, 3.0)]:  # one Bragg spot on the grain ring
        rr = geom.radius_px_for_d(d)
        x, y = int(200 + rr * np.cos(ang)), int(200 + rr * np.sin(ang))
        g = 400 / (2 * np.pi * 1.5**2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
        lam += g
        spots |= g > 8
    return rng.poisson(lam).astype(np.float32), geom, grains, spots, r


def test_ice_grain_ignore_mask_marks_grains_not_rings_or_spots():
    from scipy import ndimage as ndi

    img, geom, grains, spots, r = _ice_grain_frame()
    ignore = ice_grain_ignore_mask(img, geom, spot_mask=spots)
    assert ignore[grains].mean() > 0.95  # the grains leave the loss
    assert not (ignore & ndi.binary_dilation(spots, iterations=2)).any()  # spots and their tails stay in it
    smooth_ring = np.abs(r - geom.radius_px_for_d(3.669)) < 3
    assert ignore[smooth_ring].mean() < 0.01  # a smooth ring (and its noise) stays background
    assert ignore.sum() < 4 * ndi.binary_dilation(grains, iterations=2).sum()
    # the same bright blobs off the ice lines are not grains
    moved = ice_grain_ignore_mask(img, geom.replace(distance=95.0), spot_mask=spots)
    assert moved[grains].mean() < 0.05


def test_ignored_pixels_leave_the_loss_not_the_input():
    img, pm, spots = synth_frame(shape=(64, 64))
    ignore = np.zeros(img.shape, bool)
    ignore[10:20, 30:40] = True
    cfg = SpotTrainingConfig(model=TINY, crop=64, context=64)
    (crop,) = sample_crops(img, pm, spots, crop=64, n=1, spot_fraction=0.0, rng=np.random.default_rng(0),
                           ignore=ignore)
    x, t, w, v = _make_batch([crop], cfg, np.random.default_rng(0), augment=False)
    assert np.array_equal(x[0, 1].numpy() > 0, pm == 0)  # the network still sees the pixels as valid
    assert np.array_equal(v[0, 0].numpy() > 0, (pm == 0) & ~ignore)  # the loss does not count them
    frames = [(img, pm, spots, ignore), (img, pm, spots, None)]  # 4-tuples train, None = nothing ignored
    tiny = SpotTrainingConfig(model=TINY, crop=32, context=64, crops_per_frame=1, batch_size=2, epochs=1)
    _, hist = train_spot_model(frames, frames[:1], config=tiny, device="cpu")
    assert np.isfinite(hist[0]["loss"])


def test_training_checkpoints_and_resume(tmp_path):
    frames = [synth_frame(shape=(96, 96), seed=i) for i in range(2)]
    cfg = SpotTrainingConfig(model=TINY, crop=32, context=64, crops_per_frame=1, batch_size=2, epochs=1)
    calls = []
    model, hist = train_spot_model(frames, frames[:1], config=cfg, device="cpu", out_dir=tmp_path,
                                   progress=lambda d, t, m: calls.append((d, t)))
    assert len(hist) == 1 and {"loss", "iou", "recall", "precision", "f1"} <= set(hist[0])
    assert (tmp_path / "checkpoint.pt").exists() and calls[-1][0] == calls[-1][1]
    cfg2 = SpotTrainingConfig(model=TINY, crop=32, context=64, crops_per_frame=1, batch_size=2, epochs=2)
    _, hist2 = train_spot_model(frames, frames[:1], config=cfg2, device="cpu", out_dir=tmp_path,
                                resume=tmp_path / "checkpoint.pt")
    assert [h["epoch"] for h in hist2] == [1, 2] and hist2[0] == hist[0]
    with pytest.raises(ValueError, match="checkpoint is for model"):
        bad = SpotTrainingConfig(model={"channels": [4, 8, 16]}, crop=32, context=64, epochs=3)
        train_spot_model(frames, [], config=bad, device="cpu", resume=tmp_path / "checkpoint.pt")


def test_save_load_roundtrip_and_corrupt_weights(tmp_path):
    net = build_attention_unet(**TINY).eval()
    card = save_model(net, {"name": "spots-test", "task": "spots", "architecture": "attention_unet", "config": TINY,
                            "inference": {"tile": 64, "margin": 8}}, tmp_path)
    loaded, c = load_model(card.path, task="spots", device="cpu")
    img, pm, _ = synth_frame(shape=(70, 90))
    a = predict_spot_probability(img, pixel_mask=pm, model=card.path, device="cpu")
    b = predict_spot_probability(img, pixel_mask=pm, model=net, device="cpu", tile=64, margin=8)
    np.testing.assert_allclose(a, b, atol=1e-6)
    res = find_spots(img, method="unet", pixel_mask=pm, model=str(card.path), device="cpu")
    assert not res.labels[pm != 0].any()
    # one flipped byte: the hash check refuses it with a clear error
    w = card.weights_path
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    card.path.touch()
    with pytest.raises(WeightsError, match="sha256"):
        load_model(card.path, task="spots", device="cpu")
    json.loads(card.path.read_text())  # the card itself is untouched


@pytest.mark.slow
def test_short_training_learns_synthetic_spots():
    frames = [synth_frame(seed=i, n=40) for i in range(6)]
    cfg = SpotTrainingConfig(model={"channels": [8, 16, 32], "full_res_convs": 1, "stem": 2}, crop=96, context=128,
                             crops_per_frame=12, batch_size=8, epochs=4, learning_rate=1e-2, augment=False)
    _, hist = train_spot_model(frames, [synth_frame(seed=50, n=40)], config=cfg, device="cpu")
    # an untrained network scores F1 ~0.03 here
    assert max(h["f1"] for h in hist) > 0.3 and hist[-1]["loss"] < hist[0]["loss"]


def test_time_limit_stops_after_a_step_and_still_validates():
    frames = [synth_frame(shape=(96, 96), seed=i) for i in range(2)]
    cfg = SpotTrainingConfig(model=TINY, crop=32, context=64, crops_per_frame=2, batch_size=2, epochs=5)
    _, hist = train_spot_model(frames, frames[:1], config=cfg, device="cpu", time_limit=1e-3)
    assert len(hist) == 1 and hist[0]["steps"] == 1 and "f1" in hist[0]


def test_batchnorm_folding_keeps_the_output():
    from napari_xrd.core.models.attention_unet import fold_batchnorm

    net = build_attention_unet(channels=(4, 8, 16), stem=2)
    net.train()
    with torch.no_grad():  # give BN non-trivial running statistics
        for _ in range(3):
            net(torch.randn(4, 2, 32, 32) * 3 + 1)
    net.eval()
    fused = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # original untouched
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), atol=1e-4, rtol=1e-4)


def test_fine_tuning_starts_from_the_given_weights():
    frames = [synth_frame(shape=(96, 96), seed=i) for i in range(2)]
    start = build_attention_unet(**TINY).state_dict()
    cfg = SpotTrainingConfig(model=TINY, crop=32, context=64, crops_per_frame=1, batch_size=2, epochs=1,
                             learning_rate=1e-12)
    model, _ = train_spot_model(frames, [], config=cfg, device="cpu", initial_state=start)
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            torch.testing.assert_close(v, start[k], atol=1e-6, rtol=0)


def test_threads_option_gives_the_same_probability_and_restores_torch():
    torch.manual_seed(0)
    net = build_attention_unet(**TINY).eval()
    img, pm, _ = synth_frame()
    before = torch.get_num_threads()
    a = predict_spot_probability(img, pixel_mask=pm, model=net, device="cpu", tile=64, margin=8)
    b = predict_spot_probability(img, pixel_mask=pm, model=net, device="cpu", tile=64, margin=8, threads=1)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        predict_spot_probability(img, model=net, device="cpu", tile=64, margin=8, threads=0)
    assert torch.get_num_threads() == before



def test_precision_auto_is_float32_on_the_cpu_and_mixed_is_bf16(monkeypatch):
    torch.manual_seed(0)
    net = build_attention_unet(**TINY).eval()
    img, pm, _ = synth_frame()
    opts = dict(pixel_mask=pm, model=net, device="cpu", tile=64, margin=8)
    full = predict_spot_probability(img, precision="float32", **opts)
    np.testing.assert_array_equal(predict_spot_probability(img, precision="auto", **opts), full)
    mixed = predict_spot_probability(img, precision="mixed", **opts)  # bf16 convolutions: close, not equal
    assert 0.0 < np.abs(mixed - full).max() < 0.05
    monkeypatch.setenv("NAPARI_XRD_PRECISION", "mixed")  # the environment says what "auto" is
    np.testing.assert_array_equal(predict_spot_probability(img, precision="auto", **opts), mixed)
    np.testing.assert_array_equal(predict_spot_probability(img, precision="float32", **opts), full)
    with pytest.raises(ValueError, match="precision"):
        predict_spot_probability(img, precision="half", **opts)
    with pytest.raises(ValueError, match="precision"):
        find_spots(img, method="dispersion", precision="half")


def test_touching_spots_with_a_core_each_are_cut_apart():
    from napari_xrd.core.spots.dispersion import label_spots
    from napari_xrd.core.spots.split import split_touching_spots

    yy, xx = np.mgrid[:40, :60]
    blob = lambda y, x, s=3.0: np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s**2))  # noqa: E731
    prob = np.maximum(blob(20, 20), blob(20, 26))  # two spots joined by a bridge of probability ~0.6
    prob = np.maximum(prob, blob(8, 50))  # and one alone
    labels = label_spots(prob > 0.5, min_spot_size=2)
    assert labels.max() == 2  # the pair is one region
    split = split_touching_spots(labels, prob)
    assert split.max() == 3 and np.array_equal(split > 0, labels > 0)  # no pixel gained or lost
    assert split[20, 20] != split[20, 26] and split[20, 20] > 0 and split[20, 26] > 0
    assert split[8, 50] == 1  # raster order: the lone spot's first pixel comes first
    # one core, however elongated, is one spot
    streak = np.maximum.reduce([blob(20, x, 1.5) for x in range(10, 30)])
    assert split_touching_spots(label_spots(streak > 0.5, min_spot_size=2), streak).max() == 1


def _counts(spots, shape=(48, 64), background=3.0, seed=0):
    """Poisson counts of Gaussian spots ``(y, x, photons, sigma_x, sigma_y)`` on a flat background."""
    yy, xx = np.mgrid[: shape[0], : shape[1]] + 0.5
    lam = np.full(shape, background)
    for y, x, photons, sx, sy in spots:
        lam += photons / (2 * np.pi * sx * sy) * np.exp(-((xx - x) / sx) ** 2 / 2 - ((yy - y) / sy) ** 2 / 2)
    return np.random.default_rng(seed).poisson(lam).astype(np.float32)


def test_spots_with_a_maximum_of_counts_each_are_cut_apart():
    from scipy import ndimage

    from napari_xrd.core.spots.split import split_at_intensity_peaks

    for seed in range(5):
        image = _counts([(24, 20, 700, 1.1, 1.1), (24, 26.5, 600, 1.1, 1.1), (10, 50, 500, 1.1, 1.1)], seed=seed)
        labels = np.zeros(image.shape, np.int32)
        labels[20:29, 16:31] = 1  # one region over the close pair, as a flat probability would give
        labels[7:14, 47:54] = 2  # a spot alone
        pixel_mask = np.zeros(image.shape, np.uint32)
        pixel_mask[0, 0] = 1
        split = split_at_intensity_peaks(labels, image, pixel_mask=pixel_mask)
        assert split.max() == 3 and np.array_equal(split > 0, labels > 0)
        assert split[24, 20] != split[24, 26] and split[24, 20] > 0 and split[24, 26] > 0
        com = ndimage.center_of_mass(image, split, [split[24, 20], split[24, 26]])
        assert abs(com[0][1] + 0.5 - 20) < 1.0 and abs(com[1][1] + 0.5 - 26.5) < 1.0  # each part centred on its spot
        assert split[10, 50] == 1  # raster order
    with pytest.raises(ValueError, match="differ in shape"):
        split_at_intensity_peaks(labels, image[:10])


def test_a_streak_or_a_faint_spot_stays_whole():
    from napari_xrd.core.spots.split import split_at_intensity_peaks

    for seed in range(8):
        image = _counts([(24, 30, 2500, 4.0, 1.2), (10, 8, 60, 1.2, 1.2)], seed=seed)
        labels = np.zeros(image.shape, np.int32)
        labels[7:14, 5:12] = 1  # a faint spot: its noise makes no second maximum
        labels[21:28, 18:43] = 2  # the streak
        np.testing.assert_array_equal(split_at_intensity_peaks(labels, image), labels)


def _dense_split_touching(labels, prob, core_threshold=0.9, min_core_size=2):
    """A whole-frame reference for split_touching_spots: cores labelled over the frame, then raster order."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    out = labels.astype(np.int32, copy=True)
    cores, n_cores = ndimage.label((prob > core_threshold) & (labels > 0))
    big = np.bincount(cores.ravel(), minlength=n_cores + 1) >= min_core_size
    big[0] = False
    cores = np.where(big[cores], cores, 0)
    next_label = labels.max() + 1
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        region = labels[sl] == k
        seeds = np.where(region, cores[sl], 0)
        if len(np.unique(seeds[seeds > 0])) < 2:
            continue
        parts = watershed(-prob[sl], markers=seeds, mask=region)
        for i in np.unique(parts[parts > 0])[1:]:
            out[sl][parts == i] = next_label
            next_label += 1
    first = {}
    for flat, v in enumerate(out.ravel()):
        if v and v not in first:
            first[v] = flat
    relabel = np.zeros(next_label, np.int32)
    for rank, v in enumerate(sorted(first, key=first.get), start=1):
        relabel[v] = rank
    return relabel[out]


def test_sparse_splitting_matches_a_whole_frame_reference_and_renumbers_in_raster_order():
    from napari_xrd.core.spots.dispersion import label_spots
    from napari_xrd.core.spots.split import split_at_intensity_peaks, split_touching_spots

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:96, :128]
    prob = np.zeros(yy.shape)
    for _ in range(40):  # pairs and loners, some on the frame's edge
        y, x = rng.uniform(0, 96), rng.uniform(0, 128)
        for dx in ((0.0, rng.uniform(4.0, 7.0)) if rng.random() < 0.6 else (0.0,)):
            prob = np.maximum(prob, np.exp(-((yy - y) ** 2 + (xx - x - dx) ** 2) / (2 * rng.uniform(1.5, 3.0) ** 2)))
    labels = label_spots(prob > 0.5, min_spot_size=2)
    split = split_touching_spots(labels, prob)
    np.testing.assert_array_equal(split, _dense_split_touching(labels, prob))
    assert split.max() > labels.max() and np.array_equal(split > 0, labels > 0)
    # numbers given out of raster order come back in it
    shuffled = np.concatenate([[0], rng.permutation(labels.max()) + 1])[labels]
    np.testing.assert_array_equal(split_touching_spots(shuffled, prob), split)
    # the intensity splitter too: same pixels, raster order, the frame's edge handled as its edge pixels
    image = rng.poisson(1.0 + 300 * prob).astype(np.float32)
    cut = split_at_intensity_peaks(labels, image)
    assert np.array_equal(cut > 0, labels > 0) and cut.max() >= labels.max()
    flat = cut.ravel()
    first = np.unique(flat[flat > 0], return_index=True)[1]
    assert np.all(np.diff(np.flatnonzero(flat)[first]) > 0)  # label 1, 2, ... start in raster order
    assert split_at_intensity_peaks(np.zeros_like(labels), image).max() == 0
