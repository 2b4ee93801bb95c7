"""Spot-finding dock widget: worker thread, Labels/Points layers, frames of a stack."""

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_xrd.core.coords import dials_to_napari  # noqa: E402
from napari_xrd.core.geometry import DetectorGeometry  # noqa: E402
from napari_xrd.core.masks import GAP  # noqa: E402
from napari_xrd.core.spots import find_spots  # noqa: E402

pytestmark = pytest.mark.gui


def _frame(seed, shape=(96, 120), n=8):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lam = np.full(shape, 8.0)
    for y, x in rng.uniform(8, [shape[0] - 8, shape[1] - 8], (n, 2)):
        lam += 300 / (2 * np.pi) * np.exp(-((yy + 0.5 - y) ** 2 + (xx + 0.5 - x) ** 2) / 2)
    return rng.poisson(lam).astype(np.float32)


def _add_image(viewer, data):
    geom = DetectorGeometry(shape=data.shape[-2:], pixel_size=0.172, distance=150.0, beam_center=(60.0, 48.0),
                            wavelength=1.0)
    pm = np.zeros(data.shape[-2:], np.uint32)
    pm[:, 58:61] = GAP
    return viewer.add_image(data, name="img", metadata={"geometry": geom, "pixel_mask": pm}), geom, pm


def _find_on_frame(viewer, qtbot, frame, *, timeout):
    """A spots widget run on stack frame ``frame`` only (frames "current"), finished; returns the widget."""
    from napari_xrd._napari.widgets.spots import SpotsWidget

    viewer.dims.set_current_step(0, frame)
    w = SpotsWidget(viewer)
    w._frames.value = "current"
    w.run()
    qtbot.waitUntil(lambda: w._worker is None and "img spot centres" in viewer.layers, timeout=timeout)
    return w


def test_widget_single_frame_dispersion(make_napari_viewer, qtbot):
    from napari_xrd._napari.widgets.spots import SpotsWidget

    viewer = make_napari_viewer()
    img = _frame(0)
    layer, geom, pm = _add_image(viewer, img)
    w = SpotsWidget(viewer)
    assert w._image.value is layer
    w._method.value = "dispersion"
    w.run()
    qtbot.waitUntil(lambda: w._worker is None and "img spot centres" in viewer.layers, timeout=20000)
    expected = find_spots(img, geometry=geom, pixel_mask=pm)
    np.testing.assert_array_equal(viewer.layers["img spots"].data, expected.labels)
    pts = viewer.layers["img spot centres"]
    np.testing.assert_allclose(pts.data, dials_to_napari(expected.table.fast_slow()))
    np.testing.assert_allclose(pts.features["d"], expected.table["d"])
    np.testing.assert_array_equal(pts.features["size"], expected.table["size"])
    np.testing.assert_allclose(pts.features["sigma_radial"], expected.table["sigma_radial"])
    np.testing.assert_allclose(pts.features["sigma_azimuthal"], expected.table["sigma_azimuthal"])
    assert expected.table.n_spots > 0 and str(expected.table.n_spots) in w._count.value
    assert "spots" in w._shells.value
    # the ice-ring option reaches find_spots
    assert w._options(True)["ice_rings"] == "auto"
    assert "ice_ring" in pts.features
    w._ice.value = "filter"
    assert w._options(True)["ice_rings"] == "filter" and w._options(False)["ice_rings"] == "keep"
    # the ring-background choice is the U-Net's, and reaches find_spots
    assert not w._rings.enabled and "ring_background" not in w._options(True)
    assert not w._lattice.enabled and "lattice_search" not in w._options(True)
    assert "predicted" in pts.features
    w._method.value = "unet"
    w._rings.value = "off"
    assert w._rings.enabled and w._options(True)["ring_background"] == "off"
    # so is the lattice search
    assert w._lattice.enabled and w._options(True)["lattice_search"] == "auto"
    w._lattice.value = "off"
    assert w._options(True)["lattice_search"] == "off"


def test_widget_writes_only_the_current_frame_of_a_stack(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack = np.stack([_frame(s) for s in (1, 2, 3)])
    _add_image(viewer, stack)
    w = _find_on_frame(viewer, qtbot, 1, timeout=20000)
    lab = viewer.layers["img spots"].data
    assert lab.shape == stack.shape
    assert lab[1].any() and not lab[0].any() and not lab[2].any()
    assert np.all(viewer.layers["img spot centres"].data[:, 0] == 1)
    # then all frames, in two worker processes: every frame gets its spots, points carry their frame
    assert not w._workers.enabled
    w._frames.value = "all"
    assert w._workers.enabled
    w._workers.value = 2
    w.run()
    qtbot.waitUntil(lambda: w._worker is None and viewer.layers["img spots"].data[2].any(), timeout=60000)
    frames = viewer.layers["img spot centres"].features["frame"]
    assert set(np.unique(frames)) == {0, 1, 2}
    layer = viewer.layers["img"]
    counts = []
    for f in range(3):
        expected = find_spots(stack[f], geometry=layer.metadata["geometry"], pixel_mask=layer.metadata["pixel_mask"])
        np.testing.assert_array_equal(viewer.layers["img spots"].data[f], expected.labels)
        assert np.count_nonzero(frames == f) == expected.table.n_spots
        counts.append(expected.table.n_spots)
    # the figures follow the slider: each frame's own count once it has been searched
    for f in (0, 2, 1):
        viewer.dims.set_current_step(0, f)
        assert w._count.value.startswith(f"{counts[f]} in frame {f} ({sum(counts)} in all frames)")
    # and the sweep line sums up every frame: one bar each, the busiest frame named
    busiest = int(np.argmax(counts))
    assert "3 searched" in w._sweep.value and f"most spots: {counts[busiest]} in frame {busiest}" in w._sweep.value


def test_widget_cancel(make_napari_viewer, qtbot):
    from napari_xrd._napari.widgets.spots import SpotsWidget

    viewer = make_napari_viewer()
    _add_image(viewer, np.stack([_frame(s) for s in range(6)]))
    w = SpotsWidget(viewer)
    w._frames.value = "all"
    w.run()
    w.cancel()
    qtbot.waitUntil(lambda: w._worker is None, timeout=20000)
    assert w._run.enabled


def test_shell_table_counts():
    from napari_xrd._napari.widgets.spots import shell_table

    rows = shell_table([10.0, 5.0, 2.0, 2.1, np.nan], n_shells=4)
    assert sum(r[2] for r in rows) == 4
    assert rows[0][0] == pytest.approx(10.0) and rows[-1][1] == pytest.approx(2.0)
    assert shell_table([]) == []


def test_widget_unet_with_the_shipped_model(make_napari_viewer, qtbot):
    from napari_xrd._napari.widgets.spots import SpotsWidget

    viewer = make_napari_viewer()
    img = _frame(4, shape=(128, 128))
    layer, geom, pm = _add_image(viewer, img)
    w = SpotsWidget(viewer)
    assert "default" in w._model.choices and "spots-unet-v1" in w._model.choices
    w._method.value = "unet"
    assert w._threshold.enabled and not w._sigma.enabled
    w.run()
    qtbot.waitUntil(lambda: w._worker is None and "img spot centres" in viewer.layers, timeout=60000)
    lab = viewer.layers["img spots"].data
    assert lab.max() > 0 and not lab[pm != 0].any()
    assert len(viewer.layers["img spot centres"].data) == lab.max()


def test_widget_flags_spotty_ice_ring_spots(make_napari_viewer, qtbot):
    from napari_xrd._napari.widgets.spots import SpotsWidget
    from test_spots_ice import _spotty_ice_frame

    viewer = make_napari_viewer()
    img, geom = _spotty_ice_frame()
    viewer.add_image(img, name="ice", metadata={"geometry": geom})
    w = SpotsWidget(viewer)
    w._ice.value = "keep"
    w.run()
    qtbot.waitUntil(lambda: w._worker is None and "ice spot centres" in viewer.layers, timeout=20000)
    pts = viewer.layers["ice spot centres"]
    ice = np.asarray(pts.features["ice_ring"], bool)
    assert len(pts.data) == 52 and ice.sum() == 40 and "40 on ice rings" in w._count.value
    p_ice = np.asarray(pts.features["ice_probability"], float)
    assert np.all(p_ice[ice] > 0.5) and np.all(p_ice[~ice] < 0.5)
    np.testing.assert_allclose(pts.border_color[ice][:, :3], [[0, 1, 1]] * 40)
    np.testing.assert_allclose(pts.border_color[~ice][:, :3], [[1, 1, 0]] * 12)
    # "auto" drops them
    w._ice.value = "auto"
    w.run()
    qtbot.waitUntil(lambda: w._worker is None and len(viewer.layers["ice spot centres"].data) == 12, timeout=20000)


def test_widget_flags_or_drops_the_spot_in_the_beamstop_shadow(make_napari_viewer, qtbot):
    from napari_xrd._napari.widgets.spots import SpotsWidget
    from test_spots_beamstop import _frame

    viewer = make_napari_viewer()
    img, pm, geom, streak, outside = _frame()
    viewer.add_image(img, name="bs", metadata={"geometry": geom})
    w = SpotsWidget(viewer)
    w._shadow.value = "keep"
    w.run()
    qtbot.waitUntil(lambda: w._worker is None and "bs spot centres" in viewer.layers, timeout=20000)
    pts = viewer.layers["bs spot centres"]
    shadow = np.asarray(pts.features["beamstop_shadow"], bool)
    n, n_shadow = len(pts.data), int(shadow.sum())
    # the streak, and perhaps noise the dispersion finder picks up on the disc's edge (radius 30 px)
    assert 1 <= n_shadow <= 4 and f"{n_shadow} in the beamstop shadow" in w._count.value
    np.testing.assert_allclose(pts.border_color[shadow][:, :3], [[1, 0, 1]] * n_shadow)
    # napari (row, col) with pixel centres on integers: the streak's centre minus a half pixel
    assert np.hypot(*(pts.data[shadow] - [streak[1] - 0.5, streak[0] - 0.5]).T).min() < 1.5
    assert np.hypot(*(pts.data[shadow] - [189.5, 209.5]).T).max() < 33
    w._shadow.value = "auto"
    w.run()
    qtbot.waitUntil(lambda: w._worker is None and len(viewer.layers["bs spot centres"].data) == n - n_shadow,
                    timeout=20000)
    assert not np.asarray(viewer.layers["bs spot centres"].features["beamstop_shadow"], bool).any()


def test_widget_reports_how_far_the_spots_reach(make_napari_viewer, qtbot):
    from napari_xrd._napari.widgets.spots import SpotsWidget
    from napari_xrd.core.spots import frame_statistics

    viewer = make_napari_viewer()
    img = _frame(3, n=16)
    _, geom, pm = _add_image(viewer, img)
    w = SpotsWidget(viewer)
    w._method.value = "dispersion"
    w.run()
    qtbot.waitUntil(lambda: w._worker is None and "img spot centres" in viewer.layers, timeout=20000)
    d_min = frame_statistics(find_spots(img, geometry=geom, pixel_mask=pm).table)["estimated_d_min"]
    assert d_min is not None and f"spots reach {d_min:.2f} Å" in w._count.value


def test_widget_on_a_sweep_too_large_for_a_plain_labels_array(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    # 200 000 frames of 512 x 512: as a plain int32 array the spot labels would take 210 GB
    import tempfile

    import dask.array as da

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    n_frames, shape = 200_000, (512, 512)
    frame = _frame(7, shape=shape, n=12)
    zeros = da.zeros((n_frames,) + shape, chunks=(1,) + shape, dtype=np.float32)
    sweep = da.concatenate([zeros[:150_000], da.from_array(frame[None]), zeros[150_001:]])
    viewer = make_napari_viewer()
    _add_image(viewer, sweep)
    _find_on_frame(viewer, qtbot, 150_000, timeout=30000)
    labels = viewer.layers["img spots"].data
    assert labels.shape == sweep.shape
    expected = find_spots(frame, geometry=viewer.layers["img"].metadata["geometry"],
                          pixel_mask=viewer.layers["img"].metadata["pixel_mask"])
    np.testing.assert_array_equal(labels[150_000], expected.labels)
    assert expected.table.n_spots > 0 and not labels[149_999].any()
    assert np.all(viewer.layers["img spot centres"].data[:, 0] == 150_000)
    assert not list(tmp_path.glob("napari-xrd-*"))  # the backing file is gone already (POSIX)
