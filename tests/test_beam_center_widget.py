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


def test_the_beamstop_disc_found_is_drawn_and_reported(make_napari_viewer):
    # where the estimator found the beamstop's disc (on a frame the radial fit
    # cannot answer: here its result is given the disc that find_beamstop
    # finds), the scientist sees the disc drawn and how far it lies from the answer
    from napari_xrd._napari.widgets.beam_center import BeamCenterWidget
    from napari_xrd.core.beam_center import estimate_beam_center
    from napari_xrd.core.beam_center.beamstop import find_beamstop
    from napari_xrd.core.simulate.background import beamstop_transmission

    viewer = make_napari_viewer()
    g = DetectorGeometry((300, 320), 0.172, 150.0, (166.3, 141.8), 1.0)
    rng = np.random.default_rng(3)
    t = beamstop_transmission(g.shape, g.beam_center, radius_px=10.0, arm_angle_deg=-60.0, arm_width_px=6.0,
                              transmission=0.02)
    img = rng.poisson(8.0 * t).astype(np.float32)
    header = g.replace(beam_center=(160.0, 150.0))
    layer = viewer.add_image(img, name="flat", metadata={"geometry": header})
    result = estimate_beam_center(img, geometry=header, method="heuristic")
    result.details["beamstop"] = find_beamstop(img, np.ones(g.shape, bool), pixel_size=g.pixel_size,
                                               near=(160.0, 150.0), search_radius_px=60)
    w = BeamCenterWidget(viewer)
    w._show_result(layer, header, result)
    circle = viewer.layers["flat beamstop"].data[0]
    np.testing.assert_allclose(circle.mean(axis=0), dials_to_napari(g.beam_center), atol=0.3)
    radius = np.hypot(*(circle - circle.mean(axis=0)).T)
    assert np.allclose(radius, radius.mean(), atol=1e-6) and abs(radius.mean() - 10.0) < 1.0
    assert "beamstop disc 166." in w._readout.value
    # a result without a disc clears it
    result.details.pop("beamstop")
    w._show_result(layer, header, result)
    assert len(viewer.layers["flat beamstop"].data) == 0 and "beamstop disc" not in w._readout.value
