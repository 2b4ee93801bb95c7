"""Correcting predictions in napari and saving them (real viewer, worker thread)."""

import numpy as np
import pytest

from napari_xrd._napari.layers import layer_data_from_image
from napari_xrd.core.coords import dials_to_napari
from napari_xrd.core.corrections import CorrectionStore
from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.io.types import DiffractionImage

pytestmark = pytest.mark.gui


def _viewer_with_image(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    g = DetectorGeometry((120, 100), 0.172, 150.0, (50.5, 60.5), 1.0)
    data = np.random.default_rng(0).poisson(8, (1, 120, 100)).astype(np.int32)
    src = tmp_path / "x_0001.cbf"
    src.write_bytes(b"stand-in")
    img = DiffractionImage(data=data, geometry=g, pixel_mask=np.zeros((120, 100), np.uint32), path=str(src), format="cbf")
    for d, kw, kind in layer_data_from_image(img):
        getattr(viewer, f"add_{kind}")(d, **kw)
    # a "prediction": spot mask and points as a spot finder would leave them
    pred = np.zeros((120, 100), np.uint8)
    pred[30:33, 40:43] = 1
    pred[80:82, 10:12] = 1  # a false spot the user will erase
    viewer.add_labels(pred, name="predicted spot mask", metadata={"model": {"method": "unet", "name": "spots-unet-v1",
                                                                              "sha256": "ab" * 32}})
    viewer.add_points(dials_to_napari([[41.5, 31.5], [11.0, 81.0]]), name="predicted spots")
    return viewer, img


def test_correct_and_save_then_reload(make_napari_viewer, qtbot, tmp_path):
    from napari_xrd._napari.widgets.corrections import CorrectionsWidget

    viewer, img = _viewer_with_image(make_napari_viewer, tmp_path)
    w = CorrectionsWidget(viewer)
    w._store.value = str(tmp_path / "store")
    w._mask_layer.value = viewer.layers["predicted spot mask"]
    w._points_layer.value = viewer.layers["predicted spots"]
    w.start_correcting()
    # the user's corrections
    mask = viewer.layers["predicted spot mask"]
    mask.data[80:82, 10:12] = 0  # erase the false spot
    mask.data[5:7, 5:7] = 1  # paint a missed one
    pts = viewer.layers["predicted spots"]
    pts.data = np.vstack([pts.data[:1], dials_to_napari([[6.0, 6.0]])])
    w._beam_layer.data = dials_to_napari([[52.5, 58.5]])  # drag the beam centre
    w._label_anomalies.value = True
    w._anomaly_boxes[2].value = True  # ice ring
    assert w.save() is not None
    qtbot.waitUntil(lambda: w.last_saved_id is not None and w._worker is None, timeout=60000)
    store = CorrectionStore(tmp_path / "store")
    [rec] = store.list()
    assert rec.changed["spot_mask_removed_px"] == 4 and rec.changed["spot_mask_added_px"] == 4
    assert rec.changed["spots_added"] == 1 and rec.changed["spots_removed"] == 1
    assert rec.changed["beam_center_shift_px"] == pytest.approx(np.hypot(2, 2))
    ex = store.latest(img.path, 0)
    assert ex.geometry.beam_center == (52.5, 58.5)
    assert ex.anomaly_labels[2] == 1 and ex.anomaly_labels.sum() == 1
    assert ex.provenance["models"]["spots"]["name"] == "spots-unet-v1"  # what predicted is recorded
    assert np.array_equal(ex.image, img.data[0])
    assert "1 saved correction" in w._status.value
    # reopening shows the saved work
    mask.data[:] = 0
    w.load_latest()
    assert mask.data[5, 5] == 1 and mask.data[80, 10] == 0


def test_changed_pixels_are_refused_with_a_clear_message(make_napari_viewer, qtbot, tmp_path):
    from napari_xrd._napari.widgets.corrections import CorrectionsWidget

    viewer, img = _viewer_with_image(make_napari_viewer, tmp_path)
    w = CorrectionsWidget(viewer)
    w._store.value = str(tmp_path / "store")
    w.start_correcting()
    assert w.save() is not None
    qtbot.waitUntil(lambda: w.last_saved_id is not None and w._worker is None, timeout=60000)
    image_layer = viewer.layers["x_0001.cbf"]
    image_layer.data = image_layer.data + 1  # the file was reprocessed
    assert w.save() is not None
    qtbot.waitUntil(lambda: w._worker is None, timeout=60000)
    assert "different version" in w._status.value
    assert len(CorrectionStore(tmp_path / "store").list()) == 1


def test_keybinding_saves(make_napari_viewer, qtbot, tmp_path):
    from napari_xrd._napari.widgets.corrections import SAVE_KEY, CorrectionsWidget

    viewer, _ = _viewer_with_image(make_napari_viewer, tmp_path)
    w = CorrectionsWidget(viewer)
    w._store.value = str(tmp_path / "store")
    w.start_correcting()
    from napari.utils.key_bindings import coerce_keybinding

    viewer.keymap[coerce_keybinding(SAVE_KEY)](viewer)
    qtbot.waitUntil(lambda: w.last_saved_id is not None, timeout=60000)
    assert len(CorrectionStore(tmp_path / "store").list()) == 1
