"""Beam-centre dock widget: worker thread, markers, drag-to-preview, apply."""

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_xrd.core.coords import dials_to_napari  # noqa: E402
from napari_xrd.core.geometry import DetectorGeometry  # noqa: E402
from napari_xrd.core.training.beam_center import render_frame  # noqa: E402

pytestmark = pytest.mark.gui


def _image(viewer):
    true = DetectorGeometry((300, 320), 0.6, 150.0, (166.3, 141.8), 1.0, pitch=1.0, yaw=-1.0)
    img, mask = render_frame(true, water=0.5, ice=3.0, n_spots=20, gaps=False, counts=300, seed=0)
    header = true.replace(beam_center=(160.0, 150.0), pitch=0.0, yaw=0.0)
    layer = viewer.add_image(img, name="img", metadata={"geometry": header, "pixel_mask": mask})
    return layer, true, header


def test_estimate_drag_and_apply(make_napari_viewer, qtbot):
    from napari_xrd._napari.layers import get_geometry
    from napari_xrd._napari.widgets.beam_center import BeamCenterWidget

    viewer = make_napari_viewer()
    layer, true, header = _image(viewer)
    w = BeamCenterWidget(viewer)
    assert w._image.value is layer
    w.run()
    assert w._worker is not None  # runs in a worker: the GUI thread is free
    qtbot.waitUntil(lambda: w._worker is None, timeout=60000)
    assert w._result is not None, w._readout.value
    est = viewer.layers["img estimated centre"]
    hdr = viewer.layers["img header centre"]
    np.testing.assert_allclose(hdr.data[0], dials_to_napari(header.beam_center))
    assert est.mode == "select"
    f, s = w._result.beam_center_px
    assert abs(f - true.beam_center[0]) < 1.0 and abs(s - true.beam_center[1]) < 1.0
    assert "tilt" in w._readout.value and "method" in w._readout.value
    rings = viewer.layers["img preview rings"]
    before = [p.copy() for p in rings.data]
    assert before
    # drag the estimate by 5 px: the preview rings follow at once
    est.data = est.data + np.array([[5.0, -3.0]])
    after = rings.data
    shift = np.mean(after[0], axis=0) - np.mean(before[0], axis=0)
    np.testing.assert_allclose(shift, [5.0, -3.0], atol=0.5)
    w.apply()
    g = get_geometry(layer)
    assert g.beam_center == pytest.approx((f - 3.0, s + 5.0), abs=1e-6)
    assert g.pitch == pytest.approx(w._result.pitch_deg)


def test_cancel_reports_cancelled(make_napari_viewer, qtbot):
    from napari_xrd._napari.widgets.beam_center import BeamCenterWidget

    viewer = make_napari_viewer()
    _image(viewer)
    w = BeamCenterWidget(viewer)
    w.run()
    w.cancel()  # the estimate stops at its next stage
    qtbot.waitUntil(lambda: w._worker is None, timeout=60000)
    assert w._readout.value == "cancelled"
    assert w._result is None and not w._apply.enabled
    assert "img estimated centre" not in viewer.layers
