"""``napari-xrd spots`` and ``napari-xrd train spots`` in-process."""

import json

import numpy as np
import pytest

from napari_xrd.cli import main
from napari_xrd.core.spots import find_spots


def _image(seed=0, shape=(80, 100), n_spots=6):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lam = np.full(shape, 6.0)
    for y, x in rng.uniform(8, [shape[0] - 8, shape[1] - 8], (n_spots, 2)):
        lam += 300 / (2 * np.pi) * np.exp(-((yy + 0.5 - y) ** 2 + (xx + 0.5 - x) ** 2) / 2)
    return rng.poisson(lam).astype(np.int32)


def test_spots_json_matches_python_function(tmp_path, capsys):
    img = _image()
    path = tmp_path / "frame.npy"
    np.save(path, img)
    assert main(["spots", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = find_spots(img).table
    assert len(out) == expected.n_spots > 0
    assert [round(s["x"], 6) for s in out] == [round(float(v), 6) for v in expected["x"]]
    assert [round(s["y"], 6) for s in out] == [round(float(v), 6) for v in expected["y"]]
    assert all(s["frame"] == 0 and s["d"] is None and s["size"] >= 3 for s in out)
    assert all(s["ice_ring"] is False for s in out)  # no geometry: nothing flagged
    assert all(s["predicted"] is False for s in out)  # nor anything found at lattice-predicted positions
    assert all(s["snr"] > 3 for s in out)
    assert main(["spots", str(path), "--json", "--min-spot-snr", "1000"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["spots", str(path), "--json", "--method", "dispersion", "--lattice-search", "off"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == expected.n_spots
    # the U-Net in full precision, as the Python function gives it
    assert main(["spots", str(path), "--json", "--method", "unet", "--precision", "float32"]) == 0
    unet = find_spots(img, method="unet", precision="float32").table
    assert [round(s["x"], 6) for s in json.loads(capsys.readouterr().out)] == [round(float(v), 6) for v in unet["x"]]
    # the fixed ice-ring filter needs the geometry, which a .npy file does not carry
    assert main(["spots", str(path), "--ice-rings", "filter", "--json"]) == 1
    assert "geometry" in capsys.readouterr().err


def test_spots_all_frames_and_bad_frame(tmp_path, capsys):
    stack = np.stack([_image(1), _image(2)])
    path = tmp_path / "stack.npy"
    np.save(path, stack)
    assert main(["spots", str(path), "--all", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {s["frame"] for s in out} == {0, 1}
    assert main(["spots", str(path), "--frame", "5"]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["spots", str(tmp_path / "missing.cbf")]) == 1


def test_train_spots_cli_writes_checkpoint_and_model(tmp_path, capsys):
    pytest.importorskip("torch")
    from napari_xrd.core.dataset import DatasetWriter, Example, open_dataset
    from napari_xrd.core.models.weights import find_model

    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "data") as w:
        for i in range(3):
            img = _image(i, shape=(96, 96)).astype(np.float32)
            w.add(Example(image=img, pixel_mask=np.zeros(img.shape, np.uint32), spot_mask=img > 30))
    assert len(open_dataset(tmp_path / "data")) == 3
    args = ["train", "spots", "--data", str(tmp_path / "data"), "--epochs", "1", "--device", "cpu",
            "--out", str(tmp_path / "run"), "--channels", "4,8", "--crop", "64", "--crops-per-frame", "2",
            "--batch-size", "2", "--name", "spots-cli-test", "--quiet"]
    assert main(args) == 0
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    card = find_model(tmp_path / "run" / "spots-cli-test.json")
    assert card.card["task"] == "spots" and "--epochs 1" in card.card["training_command"]
    assert card.card["data"]["n_val_frames"] == 1
    # resume to a second epoch
    args2 = args[:5] + ["2"] + args[6:]
    args2[args2.index("--name") + 1] = "spots-cli-test-2"
    assert main(args2 + ["--resume", str(tmp_path / "run" / "checkpoint.pt")]) == 0
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    del rng
    # start from the weights of a trained model: recorded as the card's base
    args3 = args[:]
    args3[args3.index("--name") + 1] = "spots-cli-test-3"
    args3[args3.index("--out") + 1] = str(tmp_path / "run3")
    assert main(args3 + ["--init", str(tmp_path / "run" / "spots-cli-test.json")]) == 0
    card3 = find_model(tmp_path / "run3" / "spots-cli-test-3.json")
    assert card3.card["base"]["name"] == "spots-cli-test" and "--init" in card3.card["training_command"]
    # an architecture that does not match the run's is refused, naming the model
    assert main(args3[:args3.index("--channels") + 1] + ["4,8,16"] + args3[args3.index("--channels") + 2:]
                + ["--init", str(tmp_path / "run" / "spots-cli-test.json")]) == 1
    assert "architecture" in capsys.readouterr().err


def _nexus_with_wrong_header(tmp_path):
    """A frame with water and ice rings whose header's beam centre is 25 px off the true one."""
    from napari_xrd.core.geometry import DetectorGeometry
    from napari_xrd.core.io.nexus import write_nexus
    from napari_xrd.core.training.beam_center import render_frame

    true = DetectorGeometry((400, 420), 0.5, 200.0, (207.3, 196.6), 1.0)
    frame, _ = render_frame(true, water=0.5, ice=3.0, n_spots=40, gaps=False, counts=300, seed=3)
    header = true.replace(beam_center=(true.beam_center[0] + 20.0, true.beam_center[1] - 15.0))
    path = tmp_path / "run_master.h5"
    write_nexus(path, frame[None].astype(np.uint32), header, compression=None)
    return path, true


def _d_error(spots, geometry):
    """Median relative error of the spots' reported d against ``geometry``'s."""
    xy = np.array([(s["x"], s["y"]) for s in spots])
    d = np.array([s["d"] for s in spots])
    return float(np.median(np.abs(d / np.atleast_1d(geometry.resolution_at(xy[:, 0], xy[:, 1])) - 1)))


def test_spots_beam_center_estimate_or_given_corrects_a_wrong_header(tmp_path, capsys):
    path, true = _nexus_with_wrong_header(tmp_path)
    base = ["spots", str(path), "--json", "--ice-rings", "keep"]
    assert main(base) == 0
    header_spots = json.loads(capsys.readouterr().out)
    assert len(header_spots) >= 20
    assert _d_error(header_spots, true) > 0.01  # 25 px off: resolutions a few per cent wrong
    assert main(base + ["--beam-center", "estimate"]) == 0
    captured = capsys.readouterr()
    estimated = json.loads(captured.out)
    assert "estimated on frame 0" in captured.err
    assert len(estimated) == len(header_spots)
    assert _d_error(estimated, true) < 0.002
    f, s = true.beam_center
    assert main(base + ["--beam-center", f"{f},{s}"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert _d_error(given, true) < 1e-6
    # errors name the problem
    assert main(base + ["--beam-center", "middle"]) == 1
    assert "FAST,SLOW" in capsys.readouterr().err
    npy = tmp_path / "frame.npy"
    np.save(npy, _image())
    assert main(["spots", str(npy), "--beam-center", "estimate"]) == 1
    assert "needs the detector geometry" in capsys.readouterr().err
