"""The corrections store keeps every promise: atomic, append-only, locked, version-checked."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_xrd.core.corrections import CorrectionConflict, CorrectionStore, describe_changes, make_correction
from napari_xrd.core.dataset import DatasetError, frame_sha256
from napari_xrd.core.geometry import DetectorGeometry

SHAPE = (96, 80)


def frame(seed=0):
    return np.random.default_rng(seed).poisson(7, SHAPE).astype(np.int32)


def geometry():
    return DetectorGeometry(SHAPE, 0.172, 150.0, (40.2, 47.9), 1.0)


def correction(img, source, frame_index=0, **kw):
    sm = np.zeros(SHAPE, bool)
    sm[10:13, 20:23] = True
    pred = np.zeros(SHAPE, bool)
    pred[10:13, 20:22] = True
    pred[50:52, 50:52] = True
    return make_correction(
        img,
        source_file=source,
        frame=frame_index,
        spot_mask=sm,
        predicted_spot_mask=pred,
        spots=[[21.5, 11.5]],
        predicted_spots=[[21.0, 11.5], [51.0, 51.0]],
        geometry=geometry(),
        predicted_geometry=geometry().replace(beam_center=(43.2, 43.9)),
        anomaly_labels=[1, 0, 0, 0, 0, 0, 0],
        models={"spots": {"name": "spots-unet-test", "sha256": "ab" * 32}},
        **kw,
    )


def test_describe_changes_counts_what_the_user_did():
    a = np.zeros((5, 5), bool)
    p = a.copy()
    a[1, 1] = a[1, 2] = True
    p[1, 1] = p[4, 4] = True
    ch = describe_changes(spot_mask=a, predicted_spot_mask=p, spots=[[1, 1], [3, 3]], predicted_spots=[[1.2, 1.0]])
    assert ch["spot_mask_added_px"] == 1 and ch["spot_mask_removed_px"] == 1
    assert ch["spots_added"] == 1 and ch["spots_removed"] == 0


def test_save_records_provenance_and_reads_back(tmp_path):
    src = tmp_path / "img_0001.cbf"
    src.write_bytes(b"x")
    store = CorrectionStore(tmp_path / "store")
    img = frame()
    eid = store.save(correction(img, src))
    rec = store.list()
    assert len(rec) == 1 and rec[0].example_id == eid
    assert rec[0].file == str(src.resolve()) and rec[0].frame_sha256 == frame_sha256(img)
    assert rec[0].changed["spots_removed"] == 1 and rec[0].changed["beam_center_shift_px"] == pytest.approx(5.0)
    ex = store.latest(src, 0)
    assert np.array_equal(ex.image, img) and ex.spot_mask.sum() == 9
    assert ex.extra["predicted_spot_mask"].sum() == 10
    prov = ex.provenance
    for key in ("time", "user", "plugin_version", "models", "header_geometry", "frame"):
        assert key in prov
    assert ex.geometry.beam_center == (40.2, 47.9)
    assert ex.anomaly_labels.tolist() == [1, 0, 0, 0, 0, 0, 0]


def test_never_overwrites_and_refuses_other_image_versions(tmp_path):
    src = tmp_path / "a.cbf"
    store = CorrectionStore(tmp_path / "store")
    img = frame()
    first = store.save(correction(img, src))
    second = store.save(correction(img, src))
    hist = store.history(src, 0)
    assert [r.example_id for r in hist] == [first, second]
    assert hist[1].supersedes == first
    changed = img.copy()
    changed[0, 0] += 1
    with pytest.raises(CorrectionConflict, match="different version"):
        store.save(correction(changed, src))
    assert len(store.list()) == 2  # nothing written by the refused save
    # another frame of the same file is independent
    store.save(correction(changed, src, frame_index=1))
    assert len(store.history(src, 1)) == 1
    with pytest.raises(ValueError, match="frame_sha256"):
        ex = correction(img, src)
        ex.provenance["frame_sha256"] = "0" * 64
        store.save(ex)


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from napari_xrd.core.corrections import CorrectionStore, make_correction
    store = CorrectionStore(sys.argv[1])
    tag, n, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for i in range(n):
        img = np.random.default_rng(i).poisson(7, (size, size)).astype(np.int32)
        store.save(make_correction(img, source_file=f"/data/{tag}.cbf", frame=i,
                                   spot_mask=img > 12, anomaly_labels=[0] * 7))
        print(i, flush=True)
    """
)


def _writer(store, tag, n, size):
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(store), tag, str(n), str(size)],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_mid_save_leaves_every_earlier_correction_intact(tmp_path):
    store_dir = tmp_path / "store"
    proc = _writer(store_dir, "killed", 200, 1024)
    done = 0
    while done < 3:  # wait for three committed saves
        line = proc.stdout.readline()
        assert line, "writer died early"
        done += 1
    time.sleep(0.05)  # let it get into the next save
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = CorrectionStore(store_dir)
    report = store.verify()
    assert report.ok, str(report)
    n = len(store.list(on_error="raise"))
    assert n >= 3
    with store.dataset() as ds:
        for i in range(n):
            ex = ds[i]
            assert frame_sha256(ex.image) == ex.provenance["frame_sha256"]
    # the store keeps working after the crash (the lock is released by the dead process)
    store.lock_timeout = 5
    store.save(correction(frame(9), tmp_path / "after.cbf"))
    assert len(store.list()) == n + 1


@pytest.mark.slow
def test_two_processes_saving_at_once_lose_nothing(tmp_path):
    store_dir = tmp_path / "store"
    procs = [_writer(store_dir, tag, 6, 256) for tag in ("alpha", "beta")]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
    recs = CorrectionStore(store_dir).list(on_error="raise")
    assert len(recs) == 12
    assert {(r.file, r.frame) for r in recs} == {(f"/data/{t}.cbf", i) for t in ("alpha", "beta") for i in range(6)}


def test_corrupted_store_gives_clear_error_and_verify_names_survivors(tmp_path):
    store = CorrectionStore(tmp_path / "store")
    for i in range(3):
        store.save(correction(frame(i), tmp_path / f"f{i}.cbf"))
    shards = sorted((tmp_path / "store" / "shards").glob("*.h5"))
    victim = shards[1]
    data = bytearray(victim.read_bytes())
    data[: len(data) // 2] = b"\0" * (len(data) // 2)  # wipe its superblock and more
    victim.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=victim.name):
        store.list(on_error="raise")
    report = store.verify()
    assert not report.ok
    assert [p.name for p, _ in report.bad_shards] == [victim.name]
    assert report.n_examples == 2
    out = tmp_path / "export"
    assert store.export(out) == 2  # survivors only


def test_export_keeps_the_latest_correction_per_frame(tmp_path):
    from napari_xrd.core.dataset import open_dataset

    store = CorrectionStore(tmp_path / "store")
    img = frame()
    store.save(correction(img, tmp_path / "a.cbf"))
    last = store.save(correction(img, tmp_path / "a.cbf"))
    store.save(correction(frame(1), tmp_path / "b.cbf"))
    n = store.export(tmp_path / "out")
    assert n == 2
    with open_dataset(tmp_path / "out") as ds:
        assert last in ds.example_ids()
    with pytest.raises(FileExistsError):
        store.export(tmp_path / "out")


def test_corrections_cli(tmp_path, capsys):
    import json

    from napari_xrd.cli import main

    store = CorrectionStore(tmp_path / "store")
    store.save(correction(frame(), tmp_path / "a.cbf"))
    assert main(["corrections", "list", str(tmp_path / "store"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["file"].endswith("a.cbf") and rows[0]["changed"]["spots_removed"] == 1
    assert main(["corrections", "verify", str(tmp_path / "store"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["readable_examples"] == 1
    assert main(["corrections", "export", str(tmp_path / "store"), str(tmp_path / "out")]) == 0
    assert main(["corrections", "list", str(tmp_path / "nowhere")]) == 1
    assert "no corrections store" in capsys.readouterr().err
