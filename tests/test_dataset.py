"""The training-data format: round trip, crash safety, concurrency, corruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_xrd.core.dataset import (
    DatasetError,
    DatasetWriter,
    Example,
    frame_sha256,
    open_dataset,
)
from napari_xrd.core.geometry import DetectorGeometry


def _example(i: int, shape=(48, 40)) -> Example:
    rng = np.random.default_rng(i)
    img = rng.poisson(5.0, shape).astype(np.int32)
    spots = {"fast": rng.uniform(0, 40, 5), "slow": rng.uniform(0, 48, 5), "h": np.arange(5, dtype=np.int32)}
    return Example(
        image=img,
        pixel_mask=(rng.random(shape) < 0.01).astype(np.uint32) * 2,
        spot_mask=rng.random(shape) < 0.05,
        spots=spots,
        geometry=DetectorGeometry(shape, 0.172, 150.0 + i, (20.5, 24.0), 1.0, pitch=0.5, yaw=-0.25),
        anomaly_labels=np.array([1, 0, 0, -1, 0, 1, 0], np.int8),
        provenance={"source": "simulated", "seed": i},
        attrs={"index": i, "note": "é"},
        extra={"predicted_mask": rng.random(shape) < 0.02},
    )


def test_round_trip_is_identical(tmp_path):
    examples = [_example(i) for i in range(7)]
    with DatasetWriter(tmp_path / "ds", examples_per_shard=3) as w:
        ids = w.add_many(examples)
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 7 and len(ds.shards) == 3
    assert ds.example_ids() == ids
    for ex, back in zip(examples, ds):
        assert back.example_id == ex.example_id and back.kind == "simulated"
        np.testing.assert_array_equal(back.image, ex.image)
        assert back.image.dtype == np.int32
        np.testing.assert_array_equal(back.pixel_mask, ex.pixel_mask)
        np.testing.assert_array_equal(back.spot_mask, ex.spot_mask)
        assert back.spot_mask.dtype == bool
        for k, v in ex.spots.items():
            np.testing.assert_array_equal(back.spots[k], v)
        assert back.geometry == ex.geometry
        np.testing.assert_array_equal(back.anomaly_labels, ex.anomaly_labels)
        assert back.provenance == ex.provenance and back.attrs == ex.attrs
        np.testing.assert_array_equal(back.extra["predicted_mask"], ex.extra["predicted_mask"])
    part = ds.get(4, fields=("image",))
    np.testing.assert_array_equal(part["image"], examples[4].image)
    assert "spot_mask" not in part and part["geometry"] == examples[4].geometry
    assert [e.attrs["index"] for e in ds[2:5]] == [2, 3, 4]
    assert ds[-1].attrs["index"] == 6
    with pytest.raises(IndexError):
        ds[7]


def test_optional_fields_and_unknown_labels(tmp_path):
    with DatasetWriter(tmp_path, examples_per_shard=1) as w:
        w.add(Example(image=np.zeros((8, 8), np.float32)))
    ex = open_dataset(tmp_path)[0]
    assert ex.pixel_mask is None and ex.spot_mask is None and ex.spots is None and ex.geometry is None
    assert ex.anomaly_labels.tolist() == [-1] * 7


def test_simulated_still_round_trip(tmp_path):
    from napari_xrd.core.simulate import random_still

    st = random_still(3, shape=(96, 96))
    with DatasetWriter(tmp_path) as w:
        w.add(st.to_example())
    ex = open_dataset(tmp_path)[0]
    np.testing.assert_array_equal(ex.image, st.image)
    np.testing.assert_array_equal(ex.spots, st.spots)
    assert ex.geometry == st.geometry
    assert ex.provenance["seed"] == st.seed and ex.provenance["params"]["crystal"] == st.params["crystal"]
    np.testing.assert_array_equal(ex.extra["beamstop_mask"], st.beamstop_mask)
    np.testing.assert_array_equal(ex.extra["artifact_mask"], st.artifact_mask)


def test_bad_examples_are_refused_with_clear_errors(tmp_path):
    w = DatasetWriter(tmp_path)
    with pytest.raises(ValueError, match="spot_mask has shape"):
        w.add(Example(image=np.zeros((8, 8)), spot_mask=np.zeros((4, 4), bool)))
    with pytest.raises(ValueError, match="2-D"):
        w.add(Example(image=np.zeros((2, 8, 8))))
    w.close()
    assert len(open_dataset(tmp_path)) == 0
    with pytest.raises(DatasetError, match="no such dataset"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="not a napari-xrd dataset"):
        open_dataset(tmp_path / "plain")


def test_frame_sha256_depends_on_pixels_dtype_and_shape():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert frame_sha256(a) == frame_sha256(a.copy())
    assert frame_sha256(a) != frame_sha256(a.reshape(4, 3))
    assert frame_sha256(a) != frame_sha256(a.astype(np.int64))
    b = a.copy()
    b[0, 0] = 1
    assert frame_sha256(a) != frame_sha256(b)


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from napari_xrd.core.dataset import DatasetWriter, Example
    path, start, count, per_shard = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    size = int(sys.argv[5])
    w = DatasetWriter(path, examples_per_shard=per_shard)
    for i in range(start, start + count):
        img = np.random.default_rng(i).random((size, size)).astype(np.float32)
        print("writing", i, flush=True)
        w.add(Example(image=img, attrs={"index": i}, provenance={"source": "test"}))
        if w.committed:
            print("committed", i, flush=True)
            w.committed.clear()
    w.close()
    print("done", flush=True)
    """
)


def _spawn(path, start, count, per_shard=1, size=512):
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(start), str(count), str(per_shard), str(size)],
        stdout=subprocess.PIPE, text=True,
    )


SIZE = 1024


def _kill_mid_write(path, n_commits, delay):
    """Start a writer, let it commit ``n_commits`` examples, kill it ``delay`` s into writing the next."""
    proc = _spawn(path, 0, 10_000, per_shard=1, size=SIZE)
    commits = 0
    for line in proc.stdout:
        if line.startswith("committed"):
            commits += 1
        elif commits >= n_commits:  # "writing i": the next example is going in now
            break
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_write_leaves_earlier_examples_intact(tmp_path):
    left_open = 0
    for trial, delay in enumerate([0.001, 0.005, 0.02]):
        path = tmp_path / f"trial{trial}"
        _kill_mid_write(path, 3, delay)
        ds = open_dataset(path)
        assert len(ds) >= 3
        for ex in ds:
            i = ex.attrs["index"]
            np.testing.assert_array_equal(ex.image, np.random.default_rng(i).random((SIZE, SIZE)).astype(np.float32))
        assert sorted(e.attrs["index"] for e in ds) == list(range(len(ds)))
        report = ds.verify()
        assert report.ok and report.n_examples == len(ds)
        assert len(report.temporary_files) <= 1
        left_open += len(report.temporary_files)
        # a new writer appends to the dataset after the crash
        with DatasetWriter(path) as w:
            w.add(Example(image=np.zeros((4, 4)), attrs={"index": -1}))
        assert len(open_dataset(path)) == len(ds) + 1
    assert left_open >= 1  # the kills landed while a shard was being written


def test_concurrent_writers_lose_nothing(tmp_path):
    procs = [_spawn(tmp_path, 1000 * k, 6, per_shard=2) for k in range(3)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and "done" in out
    ds = open_dataset(tmp_path)
    got = sorted(e.attrs["index"] for e in ds)
    assert got == sorted(1000 * k + i for k in range(3) for i in range(6))
    assert len(set(ds.example_ids())) == 18


def _two_shards(path):
    with DatasetWriter(path, examples_per_shard=2) as w:
        for i in range(4):
            rng = np.random.default_rng(i)
            w.add(Example(image=rng.random((256, 256)).astype(np.float32), attrs={"index": i}))
    return open_dataset(path).shard_paths()


def test_truncated_shard_is_named_and_skippable(tmp_path):
    first, second = _two_shards(tmp_path)
    size = second.stat().st_size
    with open(second, "r+b") as f:
        f.truncate(size // 3)
    with pytest.raises(DatasetError) as err:
        open_dataset(tmp_path)
    assert second.name in str(err.value)
    ds = open_dataset(tmp_path, on_error="skip")
    assert len(ds) == 2 and [e.attrs["index"] for e in ds] == [0, 1]
    assert ds.bad_shards[0][0] == second
    rep = ds.verify()
    assert not rep.ok and rep.n_examples == 2
    assert rep.bad_shards[0][0] == second and second.name in str(rep)


def test_flipped_bytes_are_detected_by_checksums(tmp_path):
    first, second = _two_shards(tmp_path)
    data = bytearray(first.read_bytes())
    # damage the middle of the file (compressed image chunks), leaving the metadata alone
    for k in range(len(data) // 2, len(data) // 2 + 64):
        data[k] ^= 0xFF
    first.write_bytes(bytes(data))
    ds = open_dataset(tmp_path)
    with pytest.raises(DatasetError) as err:
        for i in range(len(ds)):
            ds[i].image.sum()
    assert first.name in str(err.value) and "verify" in str(err.value)
    rep = ds.verify()
    assert not rep.ok
    assert {p for p, _, _ in rep.bad_examples} == {first}
    assert rep.n_examples == 3


def _read_index(args):
    ds, i = args
    return int(ds[i].attrs["index"]), float(ds[i].image.sum())


def test_reading_after_fork_and_refresh(tmp_path):
    import multiprocessing as mp

    with DatasetWriter(tmp_path, examples_per_shard=2) as w:
        w.add_many(_example(i) for i in range(4))
    ds = open_dataset(tmp_path)
    ds[0]  # open a handle in the parent before forking
    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map(_read_index, [(ds, i) for i in range(4)])
    assert got == [(i, float(_example(i).image.sum())) for i in range(4)]
    with DatasetWriter(tmp_path) as w:
        w.add(_example(9))
    assert len(ds) == 4
    ds.refresh()
    assert len(ds) == 5 and ds[4].attrs["index"] == 9


@pytest.mark.parametrize("compression", ["bslz4", "gzip"])
def test_both_codecs_round_trip(tmp_path, compression):
    ex = _example(3)
    with DatasetWriter(tmp_path, compression=compression) as w:
        w.add(ex)
    back = open_dataset(tmp_path)[0]
    np.testing.assert_array_equal(back.image, ex.image)
    np.testing.assert_array_equal(back.spot_mask, ex.spot_mask)
    assert open_dataset(tmp_path).verify().ok


def test_unknown_codec_is_refused(tmp_path):
    with pytest.raises(ValueError, match="compression"):
        DatasetWriter(tmp_path, compression="zip")
