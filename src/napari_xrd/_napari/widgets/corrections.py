"""Corrections widget: fix what the models got wrong and save it as training data.

The user paints/erases the spot mask with napari's Labels tools, adds or
deletes spot points, drags the beam centre, ticks anomaly labels, and saves
(button or Ctrl+Alt+S).  The save runs in a worker thread, so napari stays
responsive; the store (:class:`~napari_xrd.core.corrections.CorrectionStore`)
makes it atomic and never overwrites anything.

What the layers held when editing started is kept as "what the model
predicted", so every saved correction records what changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, ProgressBar, PushButton, SpinBox

from napari_xrd._napari.layers import find_xrd_image_layers, get_geometry
from napari_xrd.core.coords import dials_to_napari, napari_to_dials

__all__ = ["CorrectionsWidget", "default_store_path", "SAVE_KEY"]

SAVE_KEY = "Control-Alt-S"


def default_store_path() -> Path:
    home = os.environ.get("NAPARI_XRD_HOME")
    base = Path(home) if home else Path.home() / ".local" / "share" / "napari-xrd"
    return base / "corrections"


def _anomaly_classes():
    from napari_xrd.core.simulate.anomalies import ANOMALY_CLASSES

    return ANOMALY_CLASSES


class CorrectionsWidget(Container):
    """Dock widget: edit spot mask, spots, beam centre and labels; save corrections."""

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        self._beam_layer = None
        self._image = ComboBox(label="image", choices=self._image_choices)
        self._store = FileEdit(label="store", mode="d", value=str(default_store_path()))
        self._mask_layer = ComboBox(label="spot mask", choices=self._labels_choices, nullable=True)
        self._points_layer = ComboBox(label="spots", choices=self._points_choices, nullable=True)
        self._start = PushButton(text="start correcting this frame")
        self._label_anomalies = CheckBox(text="label anomalies of this frame", value=False)
        self._anomaly_boxes = [CheckBox(text=name.replace("_", " "), value=False, enabled=False) for name in _anomaly_classes()]
        self._save = PushButton(text="save correction (Ctrl+Alt+S)")
        self._load = PushButton(text="load latest saved correction")
        self._status = Label(value="")
        # fine-tuning from the store
        self._ft_task = ComboBox(label="fine-tune", choices=["spots", "beam-center"], value="spots")
        self._ft_base = ComboBox(label="base model", choices=self._model_choices)
        self._ft_epochs = SpinBox(label="epochs", min=1, max=200, value=5)
        self._ft_sim = LineEdit(label="simulated data", value="")
        self._ft_run = PushButton(text="fine-tune on the saved corrections")
        self._ft_cancel = PushButton(text="cancel fine-tuning", enabled=False)
        self._ft_progress = ProgressBar(value=0, max=1, visible=False)
        self._ft_result = Label(value="")
        super().__init__(
            widgets=[
                self._image,
                self._store,
                self._mask_layer,
                self._points_layer,
                self._start,
                self._label_anomalies,
                *self._anomaly_boxes,
                self._save,
                self._load,
                self._status,
                self._ft_task,
                self._ft_base,
                self._ft_epochs,
                self._ft_sim,
                self._ft_run,
                self._ft_cancel,
                self._ft_progress,
                self._ft_result,
            ]
        )
        self._ft_worker = None
        self._ft_state: dict = {}
        self.last_finetune = None
        self._ft_task.changed.connect(lambda *_: self._ft_base.reset_choices())
        self._ft_run.clicked.connect(self.finetune)
        self._ft_cancel.clicked.connect(self.cancel_finetune)
        self._predicted: dict = {}  # (xrd_id, frame) -> snapshot of predictions
        self._worker = None
        self._stores: dict = {}
        self.last_saved_id: str | None = None
        self._start.clicked.connect(self.start_correcting)
        self._save.clicked.connect(self.save)
        self._load.clicked.connect(self.load_latest)
        self._label_anomalies.changed.connect(self._toggle_anomalies)
        self._image.changed.connect(self._show_history)
        napari_viewer.layers.events.inserted.connect(self._reset)
        napari_viewer.layers.events.removed.connect(self._reset)
        napari_viewer.bind_key(SAVE_KEY, lambda v: self.save(), overwrite=True)
        self._show_history()

    # ------------------------------------------------------------ choices
    def _image_choices(self, *_):
        return [(ly.name, ly) for ly in find_xrd_image_layers(self._viewer)]

    def _labels_choices(self, *_):
        from napari.layers import Labels

        return [(ly.name, ly) for ly in self._viewer.layers if isinstance(ly, Labels) and ly.metadata.get("xrd_overlay") != "mask"]

    def _points_choices(self, *_):
        from napari.layers import Points

        return [
            (ly.name, ly)
            for ly in self._viewer.layers
            if isinstance(ly, Points) and ly.metadata.get("xrd_overlay") not in ("ring_labels", "beam_center")
            and ly is not self._beam_layer
        ]

    def _model_choices(self, *_):
        from napari_xrd.core.models.weights import list_models

        task = self._ft_task.value if hasattr(self, "_ft_task") else "spots"
        names = ["default"] + [c.name for c in list_models(task)]
        return list(dict.fromkeys(names))

    def _reset(self, *_):
        for w in (self._image, self._mask_layer, self._points_layer):
            w.reset_choices()

    def _toggle_anomalies(self, *_):
        for box in self._anomaly_boxes:
            box.enabled = self._label_anomalies.value

    # -------------------------------------------------------------- state
    @property
    def image_layer(self):
        return self._image.value

    def current_frame(self) -> int:
        layer = self.image_layer
        if layer is None or layer.data.ndim < 3:
            return 0
        return int(self._viewer.dims.current_step[0])

    def _frame_pixels(self) -> np.ndarray:
        layer = self.image_layer
        data = layer.data[self.current_frame()] if layer.data.ndim > 2 else layer.data
        if hasattr(data, "compute"):
            data = data.compute()
        return np.asarray(data)

    def _mask_2d(self, layer) -> np.ndarray | None:
        if layer is None:
            return None
        data = layer.data[self.current_frame()] if layer.data.ndim > 2 else layer.data
        return np.asarray(data) > 0

    def _points_fast_slow(self, layer) -> np.ndarray | None:
        if layer is None:
            return None
        pts = np.asarray(layer.data, float)
        if pts.size == 0:
            return np.empty((0, 2))
        if pts.shape[1] > 2:  # points of a stack: keep this frame's
            pts = pts[np.round(pts[:, 0]).astype(int) == self.current_frame()]
        return napari_to_dials(pts)

    def store(self):
        """The store at the chosen path (one object per path: it caches the shard index)."""
        from napari_xrd.core.corrections import CorrectionStore

        path = Path(self._store.value).expanduser()
        if path not in self._stores:
            self._stores[path] = CorrectionStore(path)
        return self._stores[path]

    def _key(self):
        return (self.image_layer.metadata.get("xrd_id"), self.current_frame())

    # ------------------------------------------------------------ actions
    def start_correcting(self, *_):
        """Make the edit layers (where missing) and remember the predictions."""
        layer = self.image_layer
        if layer is None:
            self._status.value = "open a diffraction image first"
            return
        shape = layer.data.shape[-2:]
        if self._mask_layer.value is None:
            new = self._viewer.add_labels(np.zeros(shape, np.uint8), name=f"{layer.name} spot mask (edit)")
            self._reset()
            self._mask_layer.value = new
        if self._points_layer.value is None:
            new = self._viewer.add_points(
                np.empty((0, 2)), name=f"{layer.name} spots (edit)", symbol="ring", size=8, face_color="transparent",
                border_color="#39ff14",
            )
            self._reset()
            self._points_layer.value = new
        geometry = get_geometry(layer)
        if geometry is not None:
            bc = dials_to_napari([geometry.beam_center])
            if self._beam_layer is None or self._beam_layer not in self._viewer.layers:
                self._beam_layer = self._viewer.add_points(
                    bc, name=f"{layer.name} beam centre (drag)", symbol="cross", size=20, face_color="#ff9500",
                    border_color="#ff9500",
                )
                self._beam_layer.mode = "select"
            else:
                self._beam_layer.data = bc
        self._predicted[self._key()] = {
            "spot_mask": self._mask_2d(self._mask_layer.value),
            "spots": self._points_fast_slow(self._points_layer.value),
            "geometry": geometry,
        }
        self._mask_layer.value.mode = "paint"
        self._viewer.layers.selection.active = self._mask_layer.value
        self._status.value = "paint/erase the spot mask, add/delete spots, drag the beam centre; then save"

    def corrected_geometry(self):
        g = get_geometry(self.image_layer)
        if g is None or self._beam_layer is None or self._beam_layer not in self._viewer.layers or len(self._beam_layer.data) == 0:
            return g
        fast, slow = napari_to_dials(np.asarray(self._beam_layer.data[0]))
        return g.replace(beam_center=(float(fast), float(slow)))

    def collect(self) -> dict:
        """Copies of everything a correction needs (GUI thread: reads layers, cheap).

        The expensive part (hashing the frame, comparing with the
        prediction, writing) runs in the worker on these copies, so the user
        can keep painting while a save is under way.
        """
        layer = self.image_layer
        pred = self._predicted.get(self._key(), {})
        labels = None
        if self._label_anomalies.value:
            labels = [1 if b.value else 0 for b in self._anomaly_boxes]
        mask = self._mask_2d(self._mask_layer.value)
        pm = layer.metadata.get("pixel_mask")
        return dict(
            image=np.array(self._frame_pixels(), copy=True),
            source_file=layer.metadata.get("path") or layer.name,
            frame=self.current_frame(),
            pixel_mask=None if pm is None else np.array(pm, copy=True),
            spot_mask=None if mask is None else mask.copy(),
            spots=self._points_fast_slow(self._points_layer.value),
            geometry=self.corrected_geometry(),
            anomaly_labels=labels,
            predicted_spot_mask=pred.get("spot_mask"),
            predicted_spots=pred.get("spots"),
            predicted_geometry=pred.get("geometry"),
            header_geometry=layer.metadata.get("header_geometry", get_geometry(layer)),
            models=self._models(),
        )

    def _models(self) -> dict:
        """What predicted the layers being corrected, per task (for provenance)."""
        models = dict(self.image_layer.metadata.get("models", {}))
        for task, widget in (("spots", self._mask_layer), ("spots", self._points_layer)):
            layer = widget.value
            if layer is not None and layer.metadata.get("model"):
                models.setdefault(task, dict(layer.metadata["model"]))
        return models

    def build_correction(self):
        """The correction as an Example (see :meth:`collect`)."""
        from napari_xrd.core.corrections import make_correction

        return make_correction(**self.collect())

    def save(self, *_):
        """Save the current frame's correction in a worker thread."""
        from napari.qt.threading import create_worker

        if self.image_layer is None:
            self._status.value = "nothing to save: no diffraction image"
            return None
        if self._worker is not None:
            self._status.value = "a save is still running"
            return None
        try:
            inputs = self.collect()
        except ValueError as exc:
            self._error(str(exc))
            return None
        store = self.store()

        def _make_and_save(kw):
            from napari_xrd.core.corrections import make_correction

            image = kw.pop("image")
            return store.save(make_correction(image, **kw))

        worker = create_worker(
            _make_and_save,
            inputs,
            _start_thread=False,
            _connect={"returned": self._saved, "errored": lambda exc: self._error(str(exc)), "finished": self._done},
        )
        self._worker = worker
        self._status.value = "saving…"
        worker.start()
        return worker

    def _saved(self, example_id: str):
        self.last_saved_id = example_id
        self._show_history()

    def _done(self):
        self._worker = None

    def _error(self, message: str):
        from napari.utils.notifications import show_error

        self._status.value = f"not saved: {message}"
        show_error(f"napari-xrd: correction not saved: {message}")

    def _show_history(self, *_):
        layer = self.image_layer
        if layer is None:
            self._status.value = ""
            return
        store = self.store()
        try:
            hist = store.history(layer.metadata.get("path") or layer.name, self.current_frame()) if store.exists() else []
        except OSError as exc:
            self._status.value = f"store unreadable: {exc}"
            return
        if hist:
            last = hist[-1]
            self._status.value = f"{len(hist)} saved correction(s) of this frame; last {last.time[:19]} by {last.user}"
        else:
            self._status.value = "no saved corrections of this frame"

    def load_latest(self, *_):
        """Show the newest saved correction of this frame in the edit layers."""
        layer = self.image_layer
        if layer is None:
            return
        store = self.store()
        ex = store.latest(layer.metadata.get("path") or layer.name, self.current_frame()) if store.exists() else None
        if ex is None:
            self._status.value = "no saved correction of this frame"
            return
        from napari_xrd.core.dataset import frame_sha256

        if frame_sha256(self._frame_pixels()) != ex.provenance["frame_sha256"]:
            self._error("the saved correction was made on a different version of this image")
            return
        if self._mask_layer.value is None or self._points_layer.value is None:
            self.start_correcting()
        if ex.spot_mask is not None:
            self._mask_layer.value.data = ex.spot_mask.astype(np.uint8)
        if ex.spots is not None and len(ex.spots):
            fs = np.stack([ex.spots["fast"], ex.spots["slow"]], axis=1)
            self._points_layer.value.data = dials_to_napari(fs)
        if ex.geometry is not None and self._beam_layer is not None:
            self._beam_layer.data = dials_to_napari([ex.geometry.beam_center])
        if ex.anomaly_labels is not None and np.all(ex.anomaly_labels >= 0):
            self._label_anomalies.value = True
            for box, v in zip(self._anomaly_boxes, ex.anomaly_labels):
                box.value = bool(v)
        self._status.value = f"loaded correction {ex.example_id[:8]} saved {ex.provenance.get('time', '')[:19]}"

    # ------------------------------------------------------------ fine-tune
    def finetune(self, *_):
        """Fine-tune the chosen model on the store, in a worker with progress and cancel."""
        import threading

        from napari.qt.threading import create_worker
        from qtpy.QtCore import QTimer

        from napari_xrd.core.training.finetune import finetune

        if self._ft_worker is not None:
            return None
        store = str(Path(self._store.value).expanduser())
        sim = self._ft_sim.value.strip() or None
        state = {"done": 0, "total": 1, "message": "starting", "cancel": threading.Event()}
        self._ft_state = state

        def progress(done, total, message=""):
            state.update(done=done, total=max(total, 1), message=message)

        options = dict(  # read on the GUI thread; the worker never touches widgets
            task=self._ft_task.value,
            base=self._ft_base.value,
            simulated=sim,
            epochs=int(self._ft_epochs.value),
        )

        def run():
            return finetune(store, progress=progress, cancel=state["cancel"].is_set, **options)

        timer = QTimer()
        timer.setInterval(200)
        timer.timeout.connect(self._ft_tick)
        self._ft_timer = timer
        worker = create_worker(
            run,
            _start_thread=False,
            _connect={"returned": self._ft_done, "errored": self._ft_failed, "finished": self._ft_finished},
        )
        self._ft_worker = worker
        self._ft_progress.visible = True
        self._ft_run.enabled = False
        self._ft_cancel.enabled = True
        self._ft_result.value = "fine-tuning…"
        timer.start()
        worker.start()
        return worker

    def cancel_finetune(self, *_):
        if self._ft_state:
            self._ft_state["cancel"].set()
            self._ft_result.value = "cancelling…"

    def _ft_tick(self):
        st = self._ft_state
        self._ft_progress.max = st.get("total", 1)
        self._ft_progress.value = min(st.get("done", 0), st.get("total", 1))
        self._ft_progress.label = st.get("message", "")

    def _ft_done(self, report):
        self.last_finetune = report
        self._ft_result.value = report.summary()
        self._ft_base.reset_choices()

    def _ft_failed(self, exc):
        from napari.utils.notifications import show_error

        from napari_xrd.core.progress import Cancelled

        if isinstance(exc, Cancelled):
            self._ft_result.value = "fine-tuning cancelled; no model was written"
        else:
            self._ft_result.value = f"fine-tuning failed: {exc}"
            show_error(f"napari-xrd: fine-tuning failed: {exc}")

    def _ft_finished(self):
        self._ft_timer.stop()
        self._ft_tick()
        self._ft_worker = None
        self._ft_run.enabled = True
        self._ft_cancel.enabled = False
