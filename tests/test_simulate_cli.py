"""``napari-xrd simulate``: writes the dataset format, deterministic whatever the worker count."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xrd.cli import main
from napari_xrd.core.dataset import open_dataset
from napari_xrd.core.simulate import ANOMALY_CLASSES
from napari_xrd.core.simulate.generate import simulate_example


def _run(out, *extra):
    return main(["simulate", str(out), "--n", "5", "--size", "64", "--seed", "11", "--quiet", *extra])


def test_simulate_is_deterministic_across_workers(tmp_path):
    assert _run(tmp_path / "one", "--workers", "1") == 0
    assert _run(tmp_path / "two", "--workers", "2", "--examples-per-shard", "2") == 0
    a, b = open_dataset(tmp_path / "one"), open_dataset(tmp_path / "two")
    assert len(a) == len(b) == 5 and len(b.shards) == 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.spot_mask, y.spot_mask)
        assert x.geometry == y.geometry and x.provenance == y.provenance
    # example i is reproducible on its own from (seed, i)
    again = simulate_example(11, 3, dict(shape=(64, 64), detector=None, anomalies="random", style=None,
                                         crystal="random", beam_center_range_mm=5.0, max_tilt_deg=3.0))
    np.testing.assert_array_equal(again.image, a[3].image)
    assert a[0].image.shape == (64, 64)


def test_simulate_options_reach_the_examples(tmp_path):
    out = tmp_path / "ds"
    assert main(["simulate", str(out), "--n", "3", "--size", "82x80", "--detector", "pilatus6m", "--anomalies",
                 "ice_ring,artifact", "--style", "realistic", "--crystal", "lysozyme", "--seed", "2",
                 "--workers", "1", "--quiet"]) == 0
    ds = open_dataset(out)
    for ex in ds:
        assert ex.anomaly_labels.tolist() == [1 if c in ("ice_ring", "artifact") else 0 for c in ANOMALY_CLASSES]
        assert ex.provenance["params"]["crystal"]["name"] == "lysozyme"
        assert ex.provenance["params"]["detector"] == "pilatus6m"
        assert ex.image.shape == (82, 80)


@pytest.mark.parametrize(
    "args, message",
    [(["--anomalies", "ice"], "unknown anomaly"), (["--crystal", "quartz"], "unknown crystal"),
     (["--detector", "mar345"], "unknown detector"), (["--size", "-3"], "--size"), (["--size", "ax2"], "--size")],
)
def test_simulate_bad_options_fail_clearly(tmp_path, capsys, args, message):
    assert main(["simulate", str(tmp_path / "x"), "--n", "1", "--quiet", *args]) == 1
    assert message in capsys.readouterr().err


def test_cancel_keeps_finished_examples(tmp_path):
    from napari_xrd.core.progress import Cancelled
    from napari_xrd.core.simulate.generate import write_simulated_dataset

    calls = []

    def progress(done, total, message):
        calls.append((done, total))

    with pytest.raises(Cancelled):
        write_simulated_dataset(tmp_path, 10, seed=1, workers=1, shape=(48, 48), progress=progress,
                                cancel=lambda: len(calls) > 3)
    assert calls[0] == (0, 10) and calls[-1] == (3, 10)
    assert len(open_dataset(tmp_path)) == 3


def test_progress_bar_runs(tmp_path, capsys):
    assert main(["simulate", str(tmp_path), "--n", "2", "--size", "48", "--workers", "1"]) == 0
    assert "wrote 2 simulated images" in capsys.readouterr().out  # (tqdm hides its bar when not on a terminal)


def test_worker_count_is_honoured(tmp_path, monkeypatch):
    import multiprocessing as mp

    from napari_xrd.core.simulate import generate

    pools = []
    real_get_context = mp.get_context

    class Spy:
        def __init__(self, ctx):
            self.ctx = ctx

        def Pool(self, n):  # noqa: N802 - mirrors multiprocessing
            pools.append(n)
            return self.ctx.Pool(n)

    monkeypatch.setattr(mp, "get_context", lambda method: Spy(real_get_context(method)))
    generate.write_simulated_dataset(tmp_path / "a", 2, workers=1, shape=(32, 32))
    assert pools == []  # in process
    generate.write_simulated_dataset(tmp_path / "b", 2, workers=2, shape=(32, 32))
    assert pools == [2]
