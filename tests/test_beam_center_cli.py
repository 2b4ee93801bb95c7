"""``napari-xrd beam-center`` and ``train beam-center``, the ResNet model and its weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from napari_xrd.cli import main
from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.training.beam_center import render_frame

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "adsc_q4_lysozyme_2002.img.bz2"


def _stack(tmp_path):
    # two frames with different centres; a plain .npy has no geometry
    g0 = DetectorGeometry((400, 420), 0.5, 200.0, (200.7, 190.2), 1.0)
    g1 = g0.replace(beam_center=(221.4, 205.9))
    f0, _ = render_frame(g0, water=0.5, ice=3.0, n_spots=20, gaps=False, counts=200, seed=1)
    f1, _ = render_frame(g1, water=0.5, ice=3.0, n_spots=20, gaps=False, counts=200, seed=2)
    path = tmp_path / "stack.npy"
    np.save(path, np.stack([f0, f1]))
    return path, g0, g1


def test_cli_json_for_a_chosen_frame(tmp_path, capsys):
    path, g0, g1 = _stack(tmp_path)
    assert main(["beam-center", str(path), "--frame", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("beam_center_px", "beam_center_mm", "pitch_deg", "yaw_deg", "tilt_deg", "tilt_direction_deg",
                "uncertainty_px", "method"):
        assert key in out
    f, s = out["beam_center_px"]
    assert math.hypot(f - g1.beam_center[0], s - g1.beam_center[1]) < 0.5
    # the radial fit, or where its leave-one-quadrant-out spread says it is
    # less sure than it claims, the rings or the spots
    assert out["frame"] == 1 and out["method"].split(" (")[0] in ("radial", "rings", "friedel pairs", "lattice")


def test_cli_text_output(tmp_path, capsys):
    path, g0, _ = _stack(tmp_path)
    assert main(["beam-center", str(path)]) == 0
    text = capsys.readouterr().out
    assert "beam centre" in text and "method" in text and "tilt" in text


def test_cli_errors_name_the_problem(tmp_path, capsys):
    path, _, _ = _stack(tmp_path)
    assert main(["beam-center", str(path), "--frame", "5"]) == 1
    assert "frame 5 out of range" in capsys.readouterr().err
    assert main(["beam-center", str(tmp_path / "missing.cbf")]) == 1
    assert "missing.cbf" in capsys.readouterr().err


def test_resnet_targets_round_trip_and_output_shape():
    torch = pytest.importorskip("torch")
    from napari_xrd.core.models.resnet_center import build_resnet_center, decode_outputs, encode_targets

    y = encode_targets((1300.0, 1200.0), (2527, 2463), 1.5, -2.0)
    out = np.concatenate([y, np.full(4, np.log(0.01**2))])
    d = decode_outputs(out, (2527, 2463))
    assert d["beam_center_px"] == pytest.approx((1300.0, 1200.0))
    assert d["pitch_deg"] == pytest.approx(1.5) and d["yaw_deg"] == pytest.approx(-2.0)
    net = build_resnet_center(size=64)
    with torch.no_grad():
        o = net(torch.zeros(2, 1, 64, 64))
    assert o.shape == (2, 8)


@pytest.mark.slow
def test_train_command_saves_a_loadable_model_with_card(tmp_path, capsys):
    pytest.importorskip("torch")
    from napari_xrd.core.models.weights import load_model

    out = tmp_path / "models"
    assert main(["train", "beam-center", "--name", "bc-test", "--out", str(out), "--n-train", "64", "--n-val", "16",
                 "--epochs", "1", "--size", "64", "--batch-size", "16"]) == 0
    card = json.loads((out / "bc-test.json").read_text())
    assert card["architecture"] == "resnet_center" and card["task"] == "beam-center"
    assert "center_error_px_median" in card["metrics"] and card["training_command"].startswith("napari-xrd train")
    model, c = load_model(out / "bc-test.json", device="cpu")
    assert c.name == "bc-test"


def test_shipped_model_card_is_complete():
    from napari_xrd.core.models.weights import list_models, sha256_file

    cards = [c for c in list_models("beam-center") if c.shipped]
    if not cards:
        pytest.skip("no shipped beam-center weights in this checkout")
    for c in cards:
        for key in ("architecture", "training_command", "data", "seed", "metrics", "sha256"):
            assert key in c.card
        assert sha256_file(c.weights_path) == c.card["sha256"]
        assert c.weights_path.stat().st_size < 8e6


@pytest.mark.realdata
@pytest.mark.slow
def test_real_adsc_frame(capsys):
    if not SAMPLE.exists():
        pytest.skip("sample frame not in this checkout")
    assert main(["beam-center", str(SAMPLE), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    f, s = out["beam_center_px"]
    # the water ring's centre lies under the beamstop, whose shadow is centred
    # near (1200, 1150); the beam must hit the beamstop (radius ~60 px)
    assert math.hypot(f - 1200.0, s - 1150.0) < 60
    assert out["method"].startswith("radial")
    # the fit's curvature says ~0.1 px, but leaving a quadrant out moves it
    # by ~4 px on this CCD (and holding the tilt at 0 by ~2.7 px): the
    # uncertainty reported is the honest one
    assert 0.5 < out["uncertainty_px"] < 3.0
    # asked for the radial fit alone: the same answer, as sure
    assert main(["beam-center", str(SAMPLE), "--method", "radial", "--json"]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert forced["beam_center_px"] == pytest.approx(out["beam_center_px"], abs=1e-6)
    assert forced["uncertainty_px"] == pytest.approx(out["uncertainty_px"])
