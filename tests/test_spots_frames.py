"""Spot finding over many frames: frame selections, worker processes, streaming output."""

import json
import threading

import numpy as np
import pytest

from napari_xrd.cli import main
from napari_xrd.core.progress import Cancelled
from napari_xrd.core.spots import find_spots
from napari_xrd.core.spots.frames import find_spots_in_frames, parse_frames
from tests.test_io_smv import write_smv
from tests.test_spots_cli import _image as _frame


@pytest.fixture(scope="module")
def stack():
    # frames with different spot counts, so that a mix-up of frames shows
    return np.stack([_frame(s, n_spots=2 + s) for s in range(4)])


def test_parse_frames_ranges_negative_and_order():
    assert parse_frames("0-3,7", 10) == [0, 1, 2, 3, 7]
    assert parse_frames("5, 2, 5", 10) == [5, 2]
    assert parse_frames("-1", 10) == [9]
    assert parse_frames("all", 3) == [0, 1, 2]


@pytest.mark.parametrize("spec, problem", [("3-1", "backwards"), ("a", "not a frame index"), ("8-12", "out of range"),
                                           ("-11", "out of range"), ("1,,2", "not a frame index")])
def test_parse_frames_rejects_bad_selections(spec, problem):
    with pytest.raises(ValueError, match=problem) as err:
        parse_frames(spec, 10)
    assert repr(spec) in str(err.value)


def test_frames_in_order_and_equal_to_find_spots(stack):
    results = list(find_spots_in_frames(stack, [2, 0, 3]))
    assert [f for f, _, _ in results] == [2, 0, 3]
    for f, labels, table in results:
        expected = find_spots(stack[f])
        assert table.n_spots == expected.table.n_spots > 0
        np.testing.assert_allclose(table["x"], expected.table["x"])
        np.testing.assert_array_equal(labels, expected.labels)
    # without labels: the same tables
    light = list(find_spots_in_frames(stack, [2], with_labels=False))
    assert light[0][1] is None and light[0][2].n_spots == results[0][2].n_spots


def test_worker_processes_give_the_same_results_in_frame_order(stack):
    seen = []
    serial = list(find_spots_in_frames(stack, with_labels=False))
    parallel = list(find_spots_in_frames(stack, nproc=2, progress=lambda d, t, m: seen.append((d, t))))
    assert [f for f, _, _ in parallel] == [0, 1, 2, 3]
    for (_, _, a), (f, labels, b) in zip(serial, parallel):
        assert a.n_spots == b.n_spots
        np.testing.assert_allclose(a["x"], b["x"])
        np.testing.assert_allclose(a["snr"], b["snr"])
        np.testing.assert_array_equal(labels, find_spots(stack[f]).labels)
    assert seen[-1] == (4, 4) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_cancel_stops_workers_and_keeps_what_was_yielded(stack):
    stop = threading.Event()
    got = []
    with pytest.raises(Cancelled):
        for f, _, table in find_spots_in_frames(np.concatenate([stack] * 3), nproc=2, cancel=stop.is_set,
                                                with_labels=False):
            got.append(f)
            stop.set()
    assert got == [0]


def test_bad_nproc_and_frame_index(stack):
    with pytest.raises(ValueError, match="nproc"):
        list(find_spots_in_frames(stack, nproc=0))
    with pytest.raises(IndexError, match="out of range"):
        list(find_spots_in_frames(stack, [4]))


def test_unreadable_frame_of_a_series_names_the_file_after_earlier_frames(tmp_path, capsys):
    for k in range(3):
        write_smv(tmp_path / f"sweep_{k + 1:03d}.img", _frame(k).astype(np.uint16))
    bad = tmp_path / "sweep_003.img"
    bad.write_bytes(bad.read_bytes()[:700])  # truncated: header intact, pixels missing
    code = main(["spots", str(tmp_path / "sweep_*.img"), "--all", "--summary", "--jsonl", "--nproc", "2"])
    captured = capsys.readouterr()
    assert code == 1
    assert "sweep_003.img" in captured.err
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["frame"] for r in rows] == [0, 1]  # the frames before the bad one were printed as they came


def test_cli_frames_nproc_and_json_lines(tmp_path, capsys, stack):
    path = tmp_path / "stack.npy"
    np.save(path, stack)
    assert main(["spots", str(path), "--frames", "1-3", "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert main(["spots", str(path), "--frames", "1-3", "--jsonl", "--nproc", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == whole and {r["frame"] for r in lines} == {1, 2, 3}
    assert main(["spots", str(path), "--frames", "0,2", "--summary", "--jsonl"]) == 0
    summaries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["frame"] for s in summaries] == [0, 2]
    assert [s["n_spots"] for s in summaries] == [find_spots(stack[f]).table.n_spots for f in (0, 2)]
    assert main(["spots", str(path), "--frames", "0,2", "--summary"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == str(path) and len(text) == 6 and text[2].split()[:2] == ["0", str(summaries[0]["n_spots"])]
    assert text[4].startswith("spots per frame (2 frames, 0–2): ") and text[5].startswith("most spots: ")
    assert main(["spots", str(path), "--frames", "2-9"]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["spots", str(path), "--all", "--nproc", "0"]) == 1
    assert "--nproc" in capsys.readouterr().err


def test_spots_in_file_is_the_cli_json(tmp_path, capsys, stack):
    from napari_xrd.cli.spots import spots_in_file

    path = tmp_path / "stack.npy"
    np.save(path, stack)
    assert main(["spots", str(path), "--frames", "0,3", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    rows = spots_in_file(path, frames=[0, 3], nproc=2)
    assert rows == cli and {r["frame"] for r in rows} == {0, 3}
