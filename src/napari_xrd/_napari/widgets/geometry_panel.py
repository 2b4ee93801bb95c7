"""Geometry panel: what the detector geometry says about the image under the cursor.

Shows the geometry of the selected diffraction image, a live readout of the
pixel under the cursor (position, raw value, resolution d, 2θ, azimuth) in
the panel and in the canvas corner, display controls suited to diffraction
data (linear/log ramp, inverted, gamma, percentile contrast) and resolution
/ ice rings.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, FloatSpinBox, Label, PushButton

from napari_xrd._napari.layers import colormap, find_xrd_image_layers, get_geometry, overlay_layers, set_geometry
from napari_xrd._napari.readout import cursor_readout, format_readout, install_cursor_readout
from napari_xrd.core.display import auto_contrast

__all__ = ["GeometryPanel"]


class GeometryPanel(Container):
    """Dock widget: geometry summary, cursor readout, display and ring controls."""

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        self._layer_combo = ComboBox(label="image", choices=self._image_choices)
        self._summary = Label(label="geometry", value="")
        self._readout = Label(label="cursor", value="")
        self._ramp = ComboBox(label="ramp", choices=["linear", "log"], value="linear")
        self._inverted = CheckBox(text="inverted (dark spots)", value=False)
        self._gamma = FloatSlider(label="gamma", min=0.2, max=2.0, step=0.05, value=1.0)
        self._percentile = FloatSpinBox(label="upper %", min=90.0, max=100.0, step=0.1, value=99.5)
        self._auto = PushButton(text="auto contrast")
        self._rings = CheckBox(text="resolution rings", value=True)
        self._ice = CheckBox(text="ice rings", value=False)
        super().__init__(
            widgets=[
                self._layer_combo,
                self._summary,
                self._readout,
                self._ramp,
                self._inverted,
                self._gamma,
                self._percentile,
                self._auto,
                self._rings,
                self._ice,
            ]
        )
        self._ramp.changed.connect(self._apply_colormap)
        self._inverted.changed.connect(self._apply_colormap)
        self._gamma.changed.connect(self._apply_gamma)
        self._auto.clicked.connect(self.auto_contrast)
        self._rings.changed.connect(self._toggle_rings)
        self._ice.changed.connect(self._toggle_ice)
        self._layer_combo.changed.connect(self._update_summary)
        napari_viewer.layers.events.inserted.connect(self._refresh_choices)
        napari_viewer.layers.events.removed.connect(self._refresh_choices)
        napari_viewer.mouse_move_callbacks.append(self._on_mouse_move)
        install_cursor_readout(napari_viewer)
        self._update_summary()

    # --------------------------------------------------------------- layers
    def _image_choices(self, *_):
        return [(ly.name, ly) for ly in find_xrd_image_layers(self._viewer)]

    def _refresh_choices(self, *_):
        self._layer_combo.reset_choices()
        self._update_summary()

    @property
    def layer(self):
        return self._layer_combo.value

    def _update_summary(self, *_):
        layer = self.layer
        g = get_geometry(layer) if layer is not None else None
        if g is None:
            self._summary.value = "no geometry" if layer is not None else ""
            return
        d_max, d_min = g.d_range()
        self._summary.value = (
            f"{g.name or 'detector'} {g.shape[1]}×{g.shape[0]} px of {g.pixel_size:.4g} mm\n"
            f"distance {g.distance:.2f} mm, λ {g.wavelength:.4f} Å\n"
            f"beam centre ({g.beam_center[0]:.2f}, {g.beam_center[1]:.2f}) px\n"
            f"tilt {g.tilt_deg:.2f}° (pitch {g.pitch:.2f}°, yaw {g.yaw:.2f}°)\n"
            f"corner resolution {d_min:.2f} Å"
        )

    # ------------------------------------------------------------- readout
    def _on_mouse_move(self, viewer, event):
        layer = self.layer
        if layer is None or layer not in viewer.layers:
            return
        self._readout.value = format_readout(cursor_readout(layer, viewer.cursor.position))

    # ------------------------------------------------------------- display
    def _apply_colormap(self, *_):
        layer = self.layer
        if layer is not None:
            layer.colormap = colormap("log" if self._ramp.value == "log" else "gray", inverted=self._inverted.value)

    def _apply_gamma(self, *_):
        if self.layer is not None:
            self.layer.gamma = self._gamma.value

    def auto_contrast(self, *_):
        """Percentile contrast on the displayed frame's valid pixels."""
        layer = self.layer
        if layer is None:
            return
        frame = np.asarray(layer._slice.image.raw) if layer.data.ndim > 2 else np.asarray(layer.data)
        pm = layer.metadata.get("pixel_mask")
        valid = None if pm is None else (np.asarray(pm) == 0)
        if valid is not None and valid.shape != frame.shape:
            valid = None
        layer.contrast_limits = auto_contrast(frame, valid, percentiles=(1.0, self._percentile.value))

    # --------------------------------------------------------------- rings
    def _toggle_rings(self, *_):
        layer = self.layer
        if layer is None:
            return
        for kind, ly in overlay_layers(self._viewer, layer).items():
            if kind in ("rings", "ring_labels"):
                ly.visible = self._rings.value

    def _toggle_ice(self, *_):
        layer = self.layer
        g = get_geometry(layer) if layer is not None else None
        if g is not None:
            set_geometry(self._viewer, layer, g, ice_rings=self._ice.value)
