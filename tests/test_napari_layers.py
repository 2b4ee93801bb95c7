"""napari side: layers built from a diffraction image, geometry registry, cursor readout."""

import numpy as np
import pytest

from napari_xrd._napari.layers import (
    MASK_LABEL_NAMES,
    colormap,
    get_geometry,
    layer_data_from_image,
    mask_labels,
    overlay_layers,
    set_geometry,
)
from napari_xrd.core import masks
from napari_xrd.core.coords import dials_to_napari
from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.io.types import DiffractionImage


def synthetic_image(n_frames=1, shape=(300, 240)):
    g = DetectorGeometry(shape, 0.172, 120.0, (121.3, 148.9), 0.98, name="test")
    rng = np.random.default_rng(0)
    data = rng.poisson(10, (n_frames,) + shape).astype(np.int32)
    data[:, :, 100:105] = -1
    data[:, 7, 9] = -2
    pm = masks.mask_from_values(data[0])
    return DiffractionImage(data=data, geometry=g, pixel_mask=pm, path="/data/x_00001.cbf", format="cbf")


def test_mask_labels_name_each_reason():
    pm = np.array([[0, masks.GAP, masks.DEAD, masks.GAP | masks.DEAD, masks.USER, 1 << 20]], dtype=np.uint32)
    assert mask_labels(pm).tolist() == [[0, 1, 2, 1, 6, 7]]
    assert MASK_LABEL_NAMES[1] == "gap"


def test_layer_data_tuples_carry_geometry_and_overlays():
    img = synthetic_image()
    tuples = layer_data_from_image(img)
    kinds = [t[2] for t in tuples]
    assert kinds[0] == "image" and "labels" in kinds and kinds.count("points") == 2 and "shapes" in kinds
    data, kw, _ = tuples[0]
    assert data.shape == (300, 240)  # one frame shown as 2-D
    assert kw["metadata"]["geometry"] is img.geometry
    lo, hi = kw["contrast_limits"]
    assert 0 <= lo < 10 < hi < 40  # percentile limits, not min/max (-2 .. max)
    xrd_id = kw["metadata"]["xrd_id"]
    overlays = {t[1]["metadata"]["xrd_overlay"]: t for t in tuples[1:]}
    assert all(t[1]["metadata"]["xrd_overlay_of"] == xrd_id for t in tuples[1:])
    bc = overlays["beam_center"][0]
    assert np.allclose(bc, dials_to_napari([img.geometry.beam_center]))
    labels = overlays["mask"][0]
    assert labels[7, 9] == 2 and labels[0, 102] == 1 and labels[0, 0] == 0
    rings, ring_kw, _ = overlays["rings"]
    # each ring polygon lies at the resolution it is labelled with
    for poly, d in zip(rings, ring_kw["features"]["d_spacing"]):
        fs = poly[:, ::-1] + 0.5
        assert np.allclose(img.geometry.resolution_at(fs[:, 0], fs[:, 1]), d, rtol=1e-6)


def test_stack_stays_3d_and_no_geometry_means_no_overlays():
    img = synthetic_image(n_frames=3)
    assert layer_data_from_image(img)[0][0].shape == (3, 300, 240)
    plain = DiffractionImage(data=np.ones((1, 10, 10), np.float32), geometry=None, pixel_mask=None, path="a.npy", format="npy")
    tuples = layer_data_from_image(plain)
    assert [t[2] for t in tuples] == ["image"]


def test_colormaps():
    assert colormap("log").colors[128, 0] > 0.5  # log ramp is bright at mid-level
    assert colormap("gray", inverted=True).colors[0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        colormap("jet")


def _add(viewer, tuples):
    layers = []
    for data, kw, kind in tuples:
        layers.append(getattr(viewer, f"add_{kind}")(data, **kw))
    return layers


@pytest.mark.gui
def test_set_geometry_redraws_overlays(make_napari_viewer):
    viewer = make_napari_viewer()
    img = synthetic_image()
    image_layer = _add(viewer, layer_data_from_image(img))[0]
    new = img.geometry.replace(beam_center=(100.5, 120.5), yaw=2.0)
    set_geometry(viewer, image_layer, new, ice_rings=True)
    assert get_geometry(image_layer) == new
    ov = overlay_layers(viewer, image_layer)
    assert np.allclose(ov["beam_center"].data, dials_to_napari([[100.5, 120.5]]))
    assert "ice_rings" in ov
    for poly, d in zip(ov["rings"].data, ov["rings"].features["d_spacing"]):
        fs = poly[:, ::-1] + 0.5
        assert np.allclose(new.resolution_at(fs[:, 0], fs[:, 1]), d, rtol=1e-6)
    # deleted overlays come back; ice rings go away when switched off
    viewer.layers.remove(ov["beam_center"])
    set_geometry(viewer, image_layer, new, ice_rings=False)
    ov = overlay_layers(viewer, image_layer)
    assert "beam_center" in ov and "ice_rings" not in ov
    with pytest.raises(ValueError, match="does not match"):
        set_geometry(viewer, image_layer, new.replace(shape=(10, 10)))


@pytest.mark.gui
def test_geometry_panel_readout_and_controls(make_napari_viewer):
    from napari_xrd._napari.readout import cursor_readout, format_readout
    from napari_xrd._napari.widgets.geometry_panel import GeometryPanel

    viewer = make_napari_viewer()
    img = synthetic_image(n_frames=2)
    image_layer = _add(viewer, layer_data_from_image(img))[0]
    panel = GeometryPanel(viewer)
    viewer.window.add_dock_widget(panel)
    assert panel.layer is image_layer
    assert "beam centre (121.30, 148.90)" in panel._summary.value
    # the pixel [slow=50, fast=60] of frame 1
    r = cursor_readout(image_layer, (1, 50, 60))
    assert (r["fast"], r["slow"]) == (60.5, 50.5)
    assert r["value"] == img.data[1, 50, 60]
    assert r["d_spacing"] == pytest.approx(img.geometry.resolution_at(60.5, 50.5))
    assert "Å" in format_readout(r)
    assert cursor_readout(image_layer, (0, 500, 60)) is None
    assert cursor_readout(image_layer, (0, 0, 102))["masked"] == masks.GAP
    panel._ramp.value = "log"
    assert image_layer.colormap.name == "xrd log"
    panel._gamma.value = 0.5
    assert image_layer.gamma == 0.5
    panel._rings.value = False
    assert not overlay_layers(viewer, image_layer)["rings"].visible
    panel._ice.value = True
    assert "ice_rings" in overlay_layers(viewer, image_layer)
    # the canvas-corner readout follows the cursor
    viewer.cursor.position = (1, 50, 60)
    from napari_xrd._napari.readout import _update_overlay, text_overlay

    _update_overlay(viewer)
    overlay = text_overlay(viewer)
    assert overlay.visible and "I " in overlay.text and "2θ" in overlay.text
    image_layer.contrast_limits = (0, 1)
    panel.auto_contrast()
    assert image_layer.contrast_limits[1] > 10
