"""The shipped spot model: card, hash, size, loading, and refusal of damaged weights."""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_xrd.core.models.weights import WeightsError, find_model, list_models, load_model, sha256_file  # noqa: E402


def test_a_shipped_spot_model_with_a_complete_card():
    shipped = [c for c in list_models(task="spots") if c.shipped]
    assert shipped, "no shipped spot model in napari_xrd/weights"
    card = find_model("default", task="spots")
    assert card.shipped
    c = card.card
    for key in ("architecture", "config", "training_command", "data", "seed", "metrics", "sha256", "inference"):
        assert key in c, key
    assert c["architecture"] == "attention_unet"
    assert c["training_command"].startswith("napari-xrd train spots")
    assert "simulate" in c["data"]["note"]
    assert sha256_file(card.weights_path) == c["sha256"]
    assert card.weights_path.stat().st_size < 5e6  # a few MB at most


def test_shipped_model_loads_and_segments_a_synthetic_spot():
    model, card = load_model("default", task="spots", device="cpu")
    from napari_xrd.core.spots import find_spots

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    lam = 20 + 600 / (2 * np.pi * 1.2**2) * np.exp(-((yy - 60.5) ** 2 + (xx - 70.5) ** 2) / (2 * 1.2**2))
    res = find_spots(rng.poisson(lam).astype(np.float32), method="unet", device="cpu")
    assert res.table.n_spots >= 1
    d = np.hypot(res.table["x"] - 71.0, res.table["y"] - 61.0)
    assert d.min() < 1.5


def test_corrupted_copy_of_the_shipped_weights_is_refused(tmp_path):
    card = find_model("default", task="spots")
    shutil.copy(card.path, tmp_path / card.path.name)
    w = tmp_path / card.weights_path.name
    data = bytearray(card.weights_path.read_bytes())
    data[-100] ^= 0x55
    w.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match the model card"):
        load_model(tmp_path / card.path.name, task="spots", device="cpu")
    w.write_bytes(b"not a torch file")
    c = json.loads((tmp_path / card.path.name).read_text())
    c["sha256"] = sha256_file(w)  # a consistent card for an unreadable file
    (tmp_path / card.path.name).write_text(json.dumps(c))
    with pytest.raises(WeightsError, match="cannot load weights"):
        load_model(tmp_path / card.path.name, task="spots", device="cpu")
    w.unlink()
    with pytest.raises(WeightsError, match="missing"):
        load_model(tmp_path / card.path.name, task="spots", device="cpu")


def test_default_is_the_newest_shipped_model_and_carries_its_input_normalisation(tmp_path, monkeypatch):
    from napari_xrd.core.models import weights
    from napari_xrd.core.models.attention_unet import build_attention_unet

    tiny = {"channels": [4, 8], "full_res_convs": 1, "stem": 2}
    for name, created, inference in [("a-old", "2026-01-01T00:00:00+00:00", {}),
                                     ("z-new", "2026-06-01T00:00:00+00:00", {"input": "local"})]:
        weights.save_model(build_attention_unet(**tiny), {"name": name, "task": "spots", "architecture": "attention_unet",
                                                          "config": tiny, "created": created, "inference": inference},
                           tmp_path)
    monkeypatch.setattr(weights, "shipped_model_dir", lambda: tmp_path)
    monkeypatch.setenv("NAPARI_XRD_HOME", str(tmp_path / "home"))  # no user-promoted default
    assert find_model("default", task="spots").name == "z-new"  # not the first by name
    new, _ = load_model("default", task="spots", device="cpu")
    old, _ = load_model("a-old", task="spots", device="cpu")
    assert new.inference_options == {"input": "local"} and old.inference_options == {}


def test_tiny_weights_are_flushed_to_zero_on_load_and_save(tmp_path):
    from napari_xrd.core.models import weights
    from napari_xrd.core.models.attention_unet import build_attention_unet

    tiny = {"channels": [4, 8], "full_res_convs": 1, "stem": 2}
    net = build_attention_unet(**tiny)
    state = net.state_dict()
    w = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    state[w].view(-1)[:3] = torch.tensor([1e-39, -3e-25, 0.25])  # a subnormal, a decayed weight, a live one
    flushed = weights.flush_tiny_weights(state)
    assert flushed[w].view(-1)[:3].tolist() == [0.0, 0.0, 0.25]
    ints = [k for k, v in state.items() if not v.is_floating_point()]  # BatchNorm's step counters stay as they are
    assert ints and all(torch.equal(flushed[k], state[k]) for k in ints)
    net.load_state_dict(state)
    weights.save_model(net, {"name": "t", "task": "spots", "architecture": "attention_unet", "config": tiny}, tmp_path)
    saved = torch.load(tmp_path / "t.pt", weights_only=True)
    assert saved[w].view(-1)[:3].tolist() == [0.0, 0.0, 0.25]


@pytest.mark.realdata
@pytest.mark.slow
def test_default_model_on_the_real_adsc_frame_finds_the_dispersion_spots():
    from pathlib import Path

    from napari_xrd.core.io import open_image
    from napari_xrd.core.spots import find_spots
    from napari_xrd.core.spots.metrics import match_spots

    im = open_image(Path(__file__).resolve().parents[1] / "sample_data" / "adsc_q4_lysozyme_2002.img.bz2")
    img, pm = im.frame(0), im.pixel_mask
    disp = find_spots(img, method="dispersion", pixel_mask=pm, geometry=im.geometry)
    unet = find_spots(img, method="unet", pixel_mask=pm, geometry=im.geometry, device="cpu")
    xy = disp.table.fast_slow()
    ny, nx = img.shape
    inner = (xy[:, 0] > 3) & (xy[:, 0] < nx - 3) & (xy[:, 1] > 3) & (xy[:, 1] < ny - 3)  # the CCD's edge rows are noisy
    _, found = match_spots(unet.table.fast_slow(), xy, radius=3.0)
    assert found[inner].mean() >= 0.95
    assert not unet.labels[pm != 0].any()  # nothing in the seams
    # nor in the beamstop's shadow: a dark disc of radius ~65 px round the
    # beam centre that the water ring gives (1214.3, 1155.5); a bright streak
    # of leaked scatter lies in it, 14 px from the centre
    for table in (unet.table, disp.table):
        r = np.hypot(*(table.fast_slow() - [1214.3, 1155.5]).T)
        assert r.min() > 55
    assert unet.table.n_spots < 2000 and np.median(unet.table["size"]) < 30


def test_flush_denormals_zeroes_subnormal_arithmetic_and_restores_the_setting():
    from napari_xrd.core.device import flush_denormals

    def flushed():
        return (torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() == 0.0

    before = flushed()
    with flush_denormals():
        if torch.backends.cpu.get_cpu_capability() != "DEFAULT":  # x86 with SSE3 / AVX
            assert flushed()
        # normal numbers are untouched
        assert (torch.tensor([1e-30]) * 2.0).item() == pytest.approx(2e-30)
    assert flushed() == before
