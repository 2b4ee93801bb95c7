"""Per-frame screening figures: counts, total intensity, resolution limit; the CLI's --summary."""

import json

import numpy as np
import pytest

from napari_xrd.core.spots import ICE_RING_D, frame_statistics


def _table(d, intensity=None, background=None, shadow=None):
    d = np.asarray(d, float)
    t = {"d": d, "intensity": np.full(d.size, 100.0) if intensity is None else np.asarray(intensity, float)}
    if background is not None:
        t["background"] = np.asarray(background, float)
    if shadow is not None:
        t["beamstop_shadow"] = np.asarray(shadow, bool)
    return t


def test_counts_and_total_intensity():
    d = [10.0, 5.0, 4.0, 3.99, ICE_RING_D[0], ICE_RING_D[2], 2.5, np.nan]
    stats = frame_statistics(_table(d, intensity=[100, 200, 300, 400, 500, 600, 700, 800],
                                    background=[10, 20, 30, 40, 50, 60, np.nan, 80]))
    assert stats["n_spots"] == 8
    assert stats["n_spots_no_ice"] == 5  # two on ice rings, one without a resolution
    assert stats["n_spots_4A"] == 3  # 10, 5 and 4 Å
    assert stats["total_intensity"] == pytest.approx(3600 - 290)  # NaN background counts as 0
    assert stats["estimated_d_min"] is None  # fewer than 10 spots off the ice rings
    # spots in the beamstop shadow are not counted
    shadow = frame_statistics(_table(d, shadow=[True] + [False] * 7))
    assert shadow["n_spots"] == 7 and shadow["n_spots_4A"] == 2


def test_estimated_d_min_ignores_the_outermost_percent_and_ice():
    rng = np.random.default_rng(0)
    # 500 spots uniform in 1/d² out to 2.0 Å, three stray ones at 1.2 Å, grains on the 1.948 Å ice line
    # and grains spread about the 1.72 Å line, most beyond dials.find_spots' ring width
    s2 = rng.uniform(1 / 30**2, 1 / 2.0**2, 500)
    spread = 1 / (1 / ICE_RING_D[10] + rng.normal(0, 0.002, 30))
    d = np.r_[1 / np.sqrt(s2), [1.2, 1.2, 1.2], np.full(20, ICE_RING_D[6]), spread]
    stats = frame_statistics(_table(d))
    assert 2.0 <= stats["estimated_d_min"] < 2.03
    assert frame_statistics(_table(spread))["n_spots_no_ice"] >= 15  # most spread grains are off the rings ...
    assert frame_statistics(_table(d), ice_half_width=0.0)["estimated_d_min"] < 1.8  # ... and would set the limit
    # a frame whose spots stop at 3 Å
    stats = frame_statistics(_table(np.r_[1 / np.sqrt(rng.uniform(1 / 30**2, 1 / 3.0**2, 200))]))
    assert 3.0 <= stats["estimated_d_min"] < 3.05
    with pytest.raises(ValueError, match="d_min_quantile"):
        frame_statistics(_table(d), d_min_quantile=0)


def test_statistics_of_a_found_spot_table():
    from napari_xrd.core.geometry import DetectorGeometry
    from napari_xrd.core.spots import find_spots

    geom = DetectorGeometry(shape=(300, 300), pixel_size=0.172, distance=80.0, beam_center=(150.0, 150.0),
                            wavelength=1.0)
    rng = np.random.default_rng(1)
    img = rng.poisson(3.0, (300, 300)).astype(np.float32)
    for x, y in rng.uniform(20, 280, (30, 2)):
        img[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] += 100
    table = find_spots(img, geometry=geom).table
    stats = frame_statistics(table)
    assert stats["n_spots"] == table.n_spots > 20
    assert stats["total_intensity"] == pytest.approx(np.sum(table["intensity"] - table["background"]))
    assert stats["total_intensity"] == pytest.approx(table.n_spots * 900, rel=0.05)
    assert stats["estimated_d_min"] == pytest.approx(np.quantile(table["d"], 0.01), rel=0.03)


def test_spot_count_strip():
    from napari_xrd.core.spots.statistics import spot_count_strip

    # one column per frame: not searched, no spots, a quarter, half and all of the largest count
    assert spot_count_strip([np.nan, 0, 10, 20, 40]) == "· ▂▄█"
    # a long sweep is grouped into at most ``width`` columns, each the largest count of its frames
    counts = np.zeros(1000)
    counts[500] = 7
    strip = spot_count_strip(counts, width=50)
    assert len(strip) == 50 and strip.count("█") == 1 and strip.index("█") == 25 and set(strip) == {" ", "█"}
    half = np.full(100, np.nan)
    half[:50] = 3
    assert spot_count_strip(half, width=10) == "█" * 5 + "·" * 5
    assert spot_count_strip([]) == ""


def test_sweep_highlights_name_the_busiest_and_the_furthest_reaching_frame():
    from napari_xrd.core.spots.statistics import sweep_highlights

    stats = {0: {"n_spots": 5, "estimated_d_min": None}, 3: {"n_spots": 40, "estimated_d_min": 2.5},
             7: {"n_spots": 40, "estimated_d_min": 1.9}, 9: {"n_spots": 12, "estimated_d_min": 1.9}}
    assert sweep_highlights(stats) == "most spots: 40 in frame 3; furthest: 1.90 Å in frame 7"
    assert sweep_highlights({2: {"n_spots": 0, "estimated_d_min": None}}) == "most spots: 0 in frame 2"
    assert sweep_highlights({}) == ""


def test_cli_summary(tmp_path, capsys):
    from napari_xrd.cli import main

    stack = np.random.default_rng(2).poisson(3.0, (2, 200, 200)).astype(np.int32)
    stack[0, 50:53, 60:63] += 500  # one spot on frame 0, none on frame 1
    path = tmp_path / "stack.npy"
    np.save(path, stack)
    assert main(["spots", str(path), "--all", "--summary", "--json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["frame"] for r in rows] == [0, 1]
    assert rows[0]["n_spots"] == 1 and rows[1]["n_spots"] == 0
    assert rows[0]["total_intensity"] == pytest.approx(4500, rel=0.05)
    assert main(["spots", str(path), "--all", "--summary", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "#spots" in out[1] and out[2].split()[:2] == ["0", "1"] and out[3].split()[:2] == ["1", "0"]
    # a footer sums the sweep up: one bar per frame (a full bar for 1 spot, a blank for none), the busiest frame
    assert out[4] == "spots per frame (2 frames, 0–1): █ " and out[5] == "most spots: 1 in frame 0"
