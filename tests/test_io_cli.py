"""``napari-xrd info``, called in-process."""

import json

import numpy as np
import pytest

from napari_xrd.cli import main

from test_io_cbf import small_frame, write_cbf
from test_io_smv import REAL_FRAME, ccd_frame, write_smv


def test_info_json_fields(tmp_path, capsys):
    cbf = write_cbf(tmp_path / "a_0001.cbf", small_frame())
    smv = write_smv(tmp_path / "b.img", ccd_frame())
    assert main(["info", "--json", str(cbf), str(smv)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["format"] for o in out] == ["cbf", "smv"]
    a, b = out
    assert a["shape"] == [1, 40, 50] and a["frames"] == 1 and a["dtype"] == "int32"
    assert a["geometry"]["beam_center_px"] == [21.5, 17.25]
    assert a["geometry"]["beam_center_mm"] == pytest.approx([21.5 * 0.172, 17.25 * 0.172])
    assert a["geometry"]["distance_mm"] == pytest.approx(312.5)
    assert a["geometry"]["wavelength_A"] == pytest.approx(0.9795)
    assert a["mask"] == {"gap": 40, "dead": 1} and a["masked_pixels"] == 41
    # beam centre (21.5, 17.25) lies on the 50 x 40 detector: no lower resolution limit
    assert a["resolution_A"]["d_max"] is None
    corner = np.hypot(50 - 21.5, 40 - 17.25) * 0.172  # farthest corner is (50, 40), in mm
    expected_d_min = 0.9795 / (2 * np.sin(np.arctan(corner / 312.5) / 2))
    assert a["resolution_A"]["d_min"] == pytest.approx(expected_d_min, rel=1e-6)
    assert a["metadata"]["serial"] == "60-0123"
    assert b["geometry"]["beam_center_px"] == pytest.approx([31.0, 20.5])
    assert b["metadata"]["header"]["DETECTOR_SN"] == "916"


def test_info_text_and_bad_file(tmp_path, capsys):
    good = write_cbf(tmp_path / "good.cbf", small_frame())
    bad = tmp_path / "bad.cbf"
    bad.write_bytes(good.read_bytes()[:-500])
    status = main(["info", str(good), str(bad)])
    captured = capsys.readouterr()
    assert status == 1
    assert "beam centre (fast, slow) = (21.50, 17.25) px" in captured.out
    assert "gap 40, dead 1" in captured.out
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and "bad.cbf: truncated data" in errors[0]


def test_info_series_flag(tmp_path, capsys):
    for i in range(3):
        write_cbf(tmp_path / f"s_{i + 1:04d}.cbf", small_frame(seed=i))
    assert main(["info", "--json", "--series", str(tmp_path / "s_0002.cbf")]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    assert out["frames"] == 3 and out["metadata"]["series"]["n_files"] == 3


@pytest.mark.realdata
def test_info_on_real_adsc_frame(capsys):
    assert main(["info", "--json", str(REAL_FRAME)]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    assert out["geometry"]["beam_center_px"] == pytest.approx([1160.5, 1216.9], abs=0.05)
    assert out["geometry"]["name"] == "adsc_q4"
    assert out["mask"]["gap"] > 20000
    assert 1.5 < out["resolution_A"]["d_min"] < 2.5


def test_info_json_on_nexus_master(tmp_path, capsys):
    from napari_xrd.core.geometry import DetectorGeometry
    from napari_xrd.core.io.nexus import write_nexus
    from napari_xrd.core.masks import GAP

    frames = np.random.default_rng(0).poisson(2, (3, 30, 40)).astype(np.uint16)
    mask = np.zeros((30, 40), np.uint32)
    mask[:, 7] = GAP
    geometry = DetectorGeometry((30, 40), 0.075, 120.0, (-5.0, 15.0), 1.2)  # beam off the detector
    master = write_nexus(tmp_path / "n_master.h5", frames, geometry, mask, frames_per_file=2)[0]
    assert main(["info", "--json", master]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    assert out["format"] == "nexus" and out["shape"] == [3, 30, 40] and out["dtype"] == "uint16"
    assert out["mask"] == {"gap": 30}
    assert out["geometry"]["beam_center_px"] == [-5.0, 15.0]
    d_max, d_min = out["resolution_A"]["d_max"], out["resolution_A"]["d_min"]
    assert d_max is not None and d_max > d_min  # beam off the detector: a finite low-resolution limit
    assert out["metadata"]["data_files"] == ["n_data_000001.h5", "n_data_000002.h5"]
