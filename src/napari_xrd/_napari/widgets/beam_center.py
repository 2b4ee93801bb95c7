"""Beam-centre dock widget: estimate, inspect, drag, apply.

"Estimate" runs :func:`napari_xrd.core.beam_center.estimate_beam_center` on
the current frame in a napari ``thread_worker``; the result reaches the
layers only through the worker's ``returned`` signal, on the GUI thread.
Two markers appear: the header's beam centre (grey cross, fixed) and the
estimated one (a draggable point in a Points layer left in select mode).
Dragging the estimate redraws preview resolution rings at once (with the
estimated tilt).  Where the estimator found the beamstop's disc, it is drawn
(cyan circle) and the readout says how far its centre is from the estimate.
"Apply" writes the geometry (centre from the marker, tilt from the estimate)
to the image layer with :func:`napari_xrd._napari.layers.set_geometry`,
which redraws the shared ring and beam-centre overlays that the other widgets
and the status-bar resolution read.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, ProgressBar, PushButton

from napari_xrd.core.beam_center import METHODS
from napari_xrd.core.coords import dials_to_napari, napari_to_dials

__all__ = ["BeamCenterWidget", "format_result"]

PREVIEW_COLOR = "#ff66cc"
BEAMSTOP_COLOR = "#33ddff"


def format_result(result, header=None) -> str:
    """Multi-line readout of a :class:`~napari_xrd.core.beam_center.BeamCenterResult`."""
    f, s = result.beam_center_px
    lines = [f"centre  {f:.2f}, {s:.2f} px  (±{result.uncertainty_px:.2f})"]
    lines.append(f"        {result.beam_center_mm[0]:.3f}, {result.beam_center_mm[1]:.3f} mm")
    if header is not None:
        d = float(np.hypot(f - header.beam_center[0], s - header.beam_center[1]))
        lines.append(f"header  {header.beam_center[0]:.2f}, {header.beam_center[1]:.2f} px  ({d:.2f} px away)")
    if result.tilt_determined:
        lines.append(
            f"tilt    {result.tilt_deg:.3f}° towards {result.tilt_direction_deg:.1f}°"
            f"  (±{result.tilt_uncertainty_deg:.3f}°)"
        )
        lines.append(f"        pitch {result.pitch_deg:.3f}°, yaw {result.yaw_deg:.3f}°")
    else:
        lines.append("tilt    not determinable from this frame (0 assumed)")
    lines.append(f"method  {result.method}")
    bs = result.details.get("beamstop")
    if bs is not None:
        bf, bsl = bs["beam_center_px"]
        sigma = bs.get("center_sigma_px")
        lines.append(
            f"beamstop disc {bf:.1f}, {bsl:.1f} px, r {bs['radius_px']:.1f} px"
            + (f" (±{sigma:.2f})" if sigma is not None else "")
            + f", {float(np.hypot(bf - f, bsl - s)):.1f} px from the centre"
        )
    return "\n".join(lines)


def _model_choices(_=None):
    """"default", then shipped and fine-tuned beam-centre models."""
    from napari_xrd.core.models.weights import list_models

    return list(dict.fromkeys(["default"] + [c.name for c in list_models(task="beam-center")]))


class BeamCenterWidget(Container):
    """Dock widget: beam centre and detector tilt of the selected image layer."""

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        self._image = ComboBox(label="image", choices=self._image_choices)
        self._method = ComboBox(label="method", choices=list(METHODS),
                                value="auto")
        self._model = ComboBox(label="model", choices=_model_choices, tooltip="ResNet for the coarse start")
        self._fit_tilt = CheckBox(text="fit detector tilt", value=True)
        self._run = PushButton(text="Estimate")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._apply = PushButton(text="Apply to image geometry", enabled=False)
        self._progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self._readout = Label(label="result", value="")
        super().__init__(
            widgets=[self._image, self._method, self._model, self._fit_tilt, self._run, self._cancel, self._progress,
                     self._readout, self._apply],
        )
        self._worker = None
        self._cancel_requested = False
        self._result = None
        self._target = None  # image layer the result belongs to
        self._run.clicked.connect(self.run)
        self._cancel.clicked.connect(self.cancel)
        self._apply.clicked.connect(self.apply)
        napari_viewer.layers.events.inserted.connect(self._refresh)
        napari_viewer.layers.events.removed.connect(self._refresh)

    # ------------------------------------------------------------ choices
    def _image_choices(self, _=None):
        from napari.layers import Image

        return [(ly.name, ly) for ly in self._viewer.layers if isinstance(ly, Image) and ly.data.ndim in (2, 3)]

    def _refresh(self, event=None):
        self._image.reset_choices()

    # ------------------------------------------------------------ run
    def run(self):
        """Start the estimate in a worker thread (the Estimate button)."""
        from napari.qt.threading import thread_worker

        from napari_xrd._napari.layers import get_geometry
        from napari_xrd.core.beam_center import estimate_beam_center
        from napari_xrd.core.progress import Cancelled

        layer = self._image.value
        if layer is None:
            self._readout.value = "no image layer"
            return
        if self._worker is not None:
            return
        frame_index = int(self._viewer.dims.current_step[0]) if layer.data.ndim == 3 else None
        data = layer.data if frame_index is None else layer.data[frame_index]
        geometry = get_geometry(layer)
        pixel_mask = layer.metadata.get("pixel_mask")
        method = self._method.value
        model = self._model.value or "default"
        fit_tilt = bool(self._fit_tilt.value)
        self._cancel_requested = False
        is_cancelled = lambda: self._cancel_requested  # noqa: E731

        @thread_worker
        def work():
            frame = np.asarray(data)
            try:
                return estimate_beam_center(
                    frame, geometry=geometry, pixel_mask=pixel_mask, method=method, model=model, fit_tilt=fit_tilt,
                    cancel=is_cancelled,
                )
            except Cancelled:
                return None

        worker = work()
        self._progress.max = 0  # busy indicator
        self._readout.value = "estimating…"
        worker.returned.connect(lambda r: self._show_result(layer, geometry, r))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._run.enabled = False
        self._cancel.enabled = True
        worker.start()

    def cancel(self):
        """Ask the running estimate to stop at its next stage."""
        self._cancel_requested = True

    def _on_error(self, exc):
        from napari_xrd.core.progress import Cancelled

        self._readout.value = "cancelled" if isinstance(exc, Cancelled) else f"error: {exc}"

    def _on_finished(self):
        self._worker = None
        self._run.enabled = True
        self._cancel.enabled = False
        self._progress.max = 1
        self._progress.value = 1

    # ------------------------------------------------------------ results (GUI thread)
    def _layer(self, name, kind, **kwargs):
        if name in self._viewer.layers:
            return self._viewer.layers[name]
        return getattr(self._viewer, f"add_{kind}")(**kwargs, name=name)

    def _show_result(self, layer, header, result):
        if result is None:
            self._readout.value = "cancelled"
            return
        self._result = result
        self._target = layer
        stem = layer.name
        if header is not None:
            hp = self._layer(f"{stem} header centre", "points", data=np.zeros((0, 2)), symbol="cross", size=18,
                             face_color="gray", border_color="gray")
            hp.data = dials_to_napari(np.asarray(header.beam_center))[None, :]
            hp.editable = False
        est = self._layer(f"{stem} estimated centre", "points", data=np.zeros((0, 2)), symbol="disc", size=14,
                          face_color=PREVIEW_COLOR, border_color="white")
        with est.events.data.blocker():
            est.data = dials_to_napari(np.asarray(result.beam_center_px))[None, :]
        est.mode = "select"
        est.selected_data = {0}
        if not est.metadata.get("xrd_drag_connected", False):
            est.events.data.connect(self._on_drag)
            est.metadata["xrd_drag_connected"] = True
        self._draw_beamstop(stem, result)
        self._viewer.layers.selection.active = est
        self._draw_preview()
        self._readout.value = format_result(result, header)
        self._apply.enabled = True

    def _draw_beamstop(self, stem, result):
        """Draw the beamstop disc the estimator found (a cyan circle), or clear it."""
        name = f"{stem} beamstop"
        bs = result.details.get("beamstop")
        polys = []
        if bs is not None:
            t = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)
            c, r = np.asarray(bs["beam_center_px"], float), float(bs["radius_px"])
            polys.append(dials_to_napari(np.column_stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)])))
        if name in self._viewer.layers:
            shapes = self._viewer.layers[name]
            shapes.data = []
            if polys:
                shapes.add(polys, shape_type="polygon", edge_color=BEAMSTOP_COLOR, face_color="transparent")
        elif polys:
            self._viewer.add_shapes(polys, shape_type="polygon", edge_color=BEAMSTOP_COLOR, face_color="transparent",
                                    edge_width=1.0, name=name, opacity=0.9)

    def current_geometry(self):
        """Geometry from the estimate, with the centre where the marker is now."""
        if self._result is None or self._target is None:
            return None
        name = f"{self._target.name} estimated centre"
        g = self._result.geometry
        if name in self._viewer.layers and len(self._viewer.layers[name].data):
            fs = napari_to_dials(self._viewer.layers[name].data[0])
            g = g.replace(beam_center=(float(fs[0]), float(fs[1])))
        return g

    def _on_drag(self, event=None):
        self._draw_preview()
        g = self.current_geometry()
        if g is not None and self._result is not None:
            f, s = g.beam_center
            text = self._readout.value.split("\n")
            text[0] = f"centre  {f:.2f}, {s:.2f} px  (moved by hand)"
            self._readout.value = "\n".join(text)

    def _draw_preview(self):
        from napari_xrd.core.display import resolution_ring_d_spacings

        g = self.current_geometry()
        if g is None:
            return
        polys = []
        for d in resolution_ring_d_spacings(g):
            pts = g.ring_points(d, n=180)
            if len(pts) >= 3:
                polys.append(dials_to_napari(pts))
        name = f"{self._target.name} preview rings"
        if name in self._viewer.layers:
            shapes = self._viewer.layers[name]
            shapes.data = []
            if polys:
                shapes.add(polys, shape_type="polygon", edge_color=PREVIEW_COLOR, face_color="transparent",
                           edge_width=max(1.0, max(g.shape) / 400))
        else:
            self._viewer.add_shapes(polys, shape_type="polygon", edge_color=PREVIEW_COLOR, face_color="transparent",
                                    edge_width=max(1.0, max(g.shape) / 400), name=name, opacity=0.8)
        # keep the draggable estimate on top and active
        est_name = f"{self._target.name} estimated centre"
        if est_name in self._viewer.layers:
            self._viewer.layers.selection.active = self._viewer.layers[est_name]

    def apply(self):
        """Write the estimated geometry (marker centre, estimated tilt) to the image layer."""
        from napari_xrd._napari.layers import set_geometry

        g = self.current_geometry()
        if g is None or self._target is None:
            return
        set_geometry(self._viewer, self._target, g)
        if self._result is not None:  # provenance for corrections made on this geometry
            self._target.metadata.setdefault("models", {})["beam-center"] = {
                "method": self._result.method, "model": self._model.value or "default"}
        self._readout.value = self._readout.value + "\napplied to the image geometry"
