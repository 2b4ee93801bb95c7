"""Fine-tuning on corrections: held-out split, versioned models, promotion only when better."""

import json

import numpy as np
import pytest

from napari_xrd.core.corrections import CorrectionStore, make_correction
from napari_xrd.core.models.weights import find_model, register_architecture, save_model, user_model_dir
from napari_xrd.core.training.finetune import FinetuneTask, finetune, register_task, split_heldout


class _Ex:
    def __init__(self, file, frame=0):
        self.provenance = {"file": file, "frame": frame}
        self.example_id = f"{file}:{frame}"


def test_split_heldout_groups_by_image_and_is_deterministic():
    exs = [_Ex(f"/d/{i}.cbf") for i in range(10)] + [_Ex("/d/0.cbf")]  # two corrections of one image
    train, held = split_heldout(exs, fraction=0.3, seed=1)
    assert len(held) in (3, 4) and len(train) + len(held) == 11
    files_t = {e.provenance["file"] for e in train}
    files_h = {e.provenance["file"] for e in held}
    assert not files_t & files_h  # an image is never on both sides
    assert [e.example_id for e in split_heldout(exs, fraction=0.3, seed=1)[1]] == [e.example_id for e in held]
    with pytest.raises(ValueError, match="at least 2 images"):
        split_heldout([_Ex("/d/a.cbf")])


# A real (tiny) task: the "model" predicts the mean brightness of spot pixels;
# training moves its weight towards the corrections' value.
@register_architecture("toy_mean")
def _toy(**config):
    import torch

    return torch.nn.Linear(1, 1, bias=False)


def _target(ex):
    return float(ex.image[np.asarray(ex.spot_mask, bool)].mean())


def _evaluate(model, examples, *, device, seed):
    w = float(model.weight.detach().reshape(-1)[0])
    return {"neg_error": -float(np.mean([abs(w - _target(ex)) for ex in examples]))}


def _train(model, card, train_ex, sim_ex, *, epochs, seed, device, progress=None, cancel=None):
    import torch

    goal = np.mean([_target(ex) for ex in train_ex]) * card.card.get("config", {}).get("bias", 1.0)
    with torch.no_grad():
        model.weight.fill_(float(goal))
    return model


register_task(FinetuneTask(name="toy", metric="neg_error", has_target=lambda ex: ex.spot_mask is not None,
                           evaluate=_evaluate, train=_train))


def _store_with_corrections(path, n=6, level=50):
    store = CorrectionStore(path)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.poisson(5, (32, 32)).astype(np.int32)
        sm = np.zeros((32, 32), bool)
        sm[10:13, 10:13] = True
        img[sm] = level
        store.save(make_correction(img, source_file=f"/data/{i}.cbf", spot_mask=sm))
    return store


def test_finetune_writes_a_new_versioned_model_and_promotes_it_when_better(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("NAPARI_XRD_HOME", str(tmp_path / "home"))
    base = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        base.weight.fill_(10.0)
    save_model(base, {"name": "toy-base", "task": "toy", "architecture": "toy_mean", "config": {}}, user_model_dir())
    base_bytes = (user_model_dir() / "toy-base.pt").read_bytes()
    store = _store_with_corrections(tmp_path / "store", level=50)
    report = finetune(store.path, task="toy", base="toy-base", epochs=1, seed=3)
    assert report.n_train + report.n_heldout == 6 and report.n_heldout >= 1
    assert report.new_scores["neg_error"] == pytest.approx(0.0)
    assert report.base_scores["neg_error"] == pytest.approx(-40.0)
    assert report.promoted and report.gain == pytest.approx(40.0)
    assert find_model("default", task="toy").name == report.new_model
    card = json.loads((user_model_dir() / f"{report.new_model}.json").read_text())
    assert card["base"]["name"] == "toy-base" and card["metrics"]["heldout_corrections_base"]["neg_error"] == -40.0
    assert set(card["data"]["heldout_example_ids"]).isdisjoint(card["data"]["train_example_ids"])
    assert (user_model_dir() / "toy-base.pt").read_bytes() == base_bytes  # never over the base
    assert "held-out score" in report.summary() and "now the default" in report.summary()


def test_a_worse_model_is_kept_but_not_promoted(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("NAPARI_XRD_HOME", str(tmp_path / "home"))
    good = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        good.weight.fill_(50.0)
    # a base whose config makes training overshoot: fine-tuning gets worse
    save_model(good, {"name": "toy-good", "task": "toy", "architecture": "toy_mean", "config": {"bias": 2.0}}, user_model_dir())
    store = _store_with_corrections(tmp_path / "store", level=50)
    report = finetune(store.path, task="toy", base="toy-good", epochs=1)
    assert not report.promoted and report.gain < 0
    assert not (user_model_dir() / "default-toy.txt").exists()
    assert (user_model_dir() / f"{report.new_model}.json").exists()  # kept for inspection
    assert "default is unchanged" in report.summary()


def test_finetune_needs_targets_and_a_known_task(tmp_path):
    store = _store_with_corrections(tmp_path / "store", n=2)
    with pytest.raises(ValueError, match="no fine-tuning for task"):
        finetune(store.path, task="nonsense")


@pytest.mark.slow
def test_train_spots_from_corrections_cli(tmp_path, monkeypatch, capsys):
    """The shipped U-Net fine-tuned on a few small corrected frames through the CLI."""
    from napari_xrd.cli import main
    from napari_xrd.core.detectors import DetectorModel
    from napari_xrd.core.simulate import random_still

    monkeypatch.setenv("NAPARI_XRD_HOME", str(tmp_path / "home"))
    det = DetectorModel("pad160", 160, 160, 0.172, 160, 160, 0, 0)
    store = CorrectionStore(tmp_path / "store")
    for i in range(3):
        s = random_still(50 + i, detector=det, shape=None, anomalies="none", distance_range_mm=(100.0, 200.0))
        store.save(make_correction(s.image, source_file=f"/d/{i}.cbf", pixel_mask=s.pixel_mask, spot_mask=s.spot_mask))
    shipped = find_model("default", task="spots")
    assert main(["train", "spots", "--from-corrections", str(store.path), "--epochs", "1", "--no-promote",
                 "--quiet", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["base"] == shipped.name and not out["promoted"]
    assert set(out["heldout_base"]) == {"f1", "recall", "precision", "iou", "f1_frame_mean"}
    new_card = json.loads((tmp_path / "home" / "models" / (out["model"].rsplit("/", 1)[-1][:-3] + ".json")).read_text())
    assert new_card["base"]["sha256"] == shipped.card["sha256"]
    assert "--from-corrections" in new_card["training_command"]
    assert find_model("default", task="spots").name == shipped.name  # --no-promote


@pytest.mark.slow
def test_finetuning_on_a_shifted_domain_improves_held_out_frames(tmp_path, monkeypatch):
    from napari_xrd.core.models.weights import load_model
    from napari_xrd.core.training.finetune_spots import evaluate_on_examples, shifted_domain_stills

    monkeypatch.setenv("NAPARI_XRD_HOME", str(tmp_path / "home"))
    held = [s.to_example() for s in shifted_domain_stills(12, 10_000)]
    store = CorrectionStore(tmp_path / "store")
    for j, s in enumerate(shifted_domain_stills(20, 20_000)):
        store.save(make_correction(s.image, source_file=f"/beamline/x_{j:05d}.cbf", pixel_mask=s.pixel_mask,
                                   spot_mask=s.spot_mask))
    base, _ = load_model("default", task="spots", device="cpu")
    before = evaluate_on_examples(base, held, device="cpu")
    report = finetune(store.path, task="spots", epochs=4, seed=0, device="cpu", heldout_fraction=0.2)
    tuned, _ = load_model(report.new_model_path.replace(".pt", ".json"), task="spots", device="cpu")
    after = evaluate_on_examples(tuned, held, device="cpu")
    # the shifted domain's weak spots are found (the masks hold every qualified spot's core), and
    # the frames gain on the whole without losing pooled F1
    assert after["recall"] > before["recall"] + 0.01, (before, after)
    assert after["f1_frame_mean"] > before["f1_frame_mean"] + 0.005, (before, after)
    assert after["f1"] >= before["f1"], (before, after)


@pytest.mark.slow
def test_train_beam_center_from_corrections_cli(tmp_path, monkeypatch, capsys):
    """The shipped beam-centre ResNet fine-tuned on corrected centres through the CLI."""
    from napari_xrd.cli import main
    from napari_xrd.core.detectors import DetectorModel
    from napari_xrd.core.simulate import random_still

    monkeypatch.setenv("NAPARI_XRD_HOME", str(tmp_path / "home"))
    det = DetectorModel("pad1024", 1024, 1024, 0.1, 1024, 1024, 0, 0)
    store = CorrectionStore(tmp_path / "store")
    for i in range(12):
        s = random_still(300 + i, detector=det, shape=(256, 256), anomalies="random")
        store.save(make_correction(s.image, source_file=f"/b/{i}.cbf", pixel_mask=s.pixel_mask, geometry=s.geometry))
    shipped = find_model("default", task="beam-center")
    assert main(["train", "beam-center", "--from-corrections", str(store.path), "--epochs", "2", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["base"] == shipped.name
    base_err = out["heldout_base"]["center_error_px_median"]
    new_err = out["heldout_new"]["center_error_px_median"]
    assert out["promoted"] == (new_err < base_err)
    expected = out["model"].rsplit("/", 1)[-1][:-3] if out["promoted"] else shipped.name
    assert find_model("default", task="beam-center").name == expected
