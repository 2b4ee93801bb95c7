"""The npe2 reader and the demo viewer, through napari itself."""

from pathlib import Path

import numpy as np
import pytest

from napari_xrd._napari.reader import get_reader

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "adsc_q4_lysozyme_2002.img.bz2"


def test_get_reader_declines_what_it_cannot_read(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    empty = tmp_path / "empty.cbf"
    empty.write_bytes(b"")
    assert get_reader(str(junk)) is None
    assert get_reader(str(tmp_path / "missing.cbf")) is None
    # a claimed extension with garbage inside is either declined or fails loudly at read time, never here
    reader = get_reader(str(empty))
    if reader is not None:
        with pytest.raises(ValueError, match="empty.cbf"):
            reader(str(empty))


@pytest.mark.realdata
def test_reader_returns_layers_for_the_real_adsc_frame():
    reader = get_reader(str(SAMPLE))
    assert reader is not None
    tuples = reader(str(SAMPLE))
    data, kw, kind = tuples[0]
    assert kind == "image" and data.shape == (2304, 2304)
    g = kw["metadata"]["geometry"]
    assert g.beam_center == pytest.approx((1160.5, 1216.9), abs=0.05)
    assert g.distance == 250.0 and g.wavelength == 1.0
    overlay_kinds = {t[1]["metadata"]["xrd_overlay"] for t in tuples[1:]}
    assert {"mask", "rings", "ring_labels", "beam_center"} <= overlay_kinds


@pytest.mark.gui
@pytest.mark.realdata
def test_napari_opens_the_real_frame_with_the_plugin(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open(str(SAMPLE), plugin="napari-xrd")
    names = [ly.name for ly in viewer.layers]
    assert "adsc_q4_lysozyme_2002.img" in names
    image = viewer.layers["adsc_q4_lysozyme_2002.img"]
    lo, hi = image.contrast_limits
    valid = image.metadata["pixel_mask"] == 0
    # percentile limits: most valid pixels lie inside them
    inside = np.mean((image.data[valid] >= lo) & (image.data[valid] <= hi))
    assert 0.95 < inside < 1.0
    assert any(n.endswith("mask") for n in names) and any(n.endswith("rings") for n in names)


@pytest.mark.gui
@pytest.mark.realdata
def test_demo_viewer_docks_the_widgets(make_napari_viewer, monkeypatch):
    import napari

    from napari_xrd.cli import view

    # open_viewer makes its own Viewer: hand it the fixture's (which cleans up)
    viewer = make_napari_viewer()
    monkeypatch.setattr(napari, "Viewer", lambda **kw: viewer)
    v = view.open_viewer(sample="adsc_lysozyme", show=False)
    assert v is viewer
    assert viewer.layers.selection.active.name == "adsc_q4_lysozyme_2002.img"
    docked = [k for k in viewer.window.dock_widgets]
    assert any("Geometry" in k for k in docked)


def test_cli_parses_view_and_demo():
    from napari_xrd.cli import build_parser

    p = build_parser()
    a = p.parse_args(["demo", "--screenshot", "x.png", "--sample", "simulated"])
    assert a.sample == "simulated" and a.screenshot == "x.png"
    a = p.parse_args(["view", "a.cbf", "b.cbf", "--stack"])
    assert a.files == ["a.cbf", "b.cbf"] and a.stack


@pytest.mark.slow
def test_simulated_sample_carries_its_truth_as_layers():
    from napari_xrd._napari.sample_data import simulated_pilatus
    from napari_xrd.core.coords import napari_to_dials

    layers = simulated_pilatus()
    by_name = {kw["name"]: (data, kw, kind) for data, kw, kind in layers}
    image, kw, _ = by_name["simulated Pilatus 6M"]
    assert image.shape == (2527, 2463)
    g = kw["metadata"]["geometry"]
    mask = by_name["true spot mask"][0]
    pts = by_name["true spot centroids"][0]
    assert mask.shape == image.shape and mask.sum() > 0 and len(pts) > 100
    # every true centroid lies on the detector; the clear ones (SNR >= 5) sit on the spot mask
    fs = napari_to_dials(pts)
    assert np.all((fs >= 0) & (fs <= [2463, 2527]))
    rows, cols = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
    strong = by_name["true spot centroids"][1]["features"]["snr"] >= 5
    assert strong.sum() > 100 and np.mean(mask[rows[strong], cols[strong]] > 0) > 0.99
    assert "beam_center" in {t[1]["metadata"].get("xrd_overlay") for t in layers}
    assert np.isfinite(g.resolution_at(*fs[0]))


@pytest.mark.gui
def test_napari_opens_a_numbered_series_as_one_lazy_stack(make_napari_viewer, tmp_path):
    from test_io_cbf import small_frame, write_cbf

    frames = [small_frame(seed=i) for i in range(3)]
    paths = []
    for i, f in enumerate(frames):
        p = tmp_path / f"xtal_{i + 1:05d}.cbf"
        write_cbf(p, f)
        paths.append(str(p))
    viewer = make_napari_viewer()
    viewer.open(paths, plugin="napari-xrd", stack=True)
    images = [ly for ly in viewer.layers if ly._type_string == "image"]
    assert len(images) == 1
    stack = images[0]
    assert stack.data.shape == (3,) + frames[0].shape
    assert np.array_equal(np.asarray(stack.data[2]), frames[2])
    # a bad file among the series is named when napari tries it, and napari keeps its layers
    bad = tmp_path / "broken_00001.cbf"
    bad.write_bytes(b"###CBF: VERSION 1.5\n" + b"\0" * 40)
    with pytest.raises(ValueError, match="broken_00001.cbf"):
        viewer.open(str(bad), plugin="napari-xrd")
    assert stack in viewer.layers
