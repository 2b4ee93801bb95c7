"""Spot-finding dock widget: DIALS dispersion or the U-Net, on one frame or all.

The computation runs in a napari ``thread_worker`` (a generator that yields
progress and one result per frame); results reach the layers only through
the worker's ``yielded`` signal, on the GUI thread.  For each image layer the
widget keeps one Labels layer (the spot mask, same shape as the image, so a
frame of a stack is written in place and other frames are left alone) and
one Points layer (centroids with features intensity, d, size, sigma_radial,
sigma_azimuthal, snr, ice_ring, ice_probability, beamstop_shadow, predicted,
frame).
"""

from __future__ import annotations

import os
import time

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox

from napari_xrd._napari.layers import stack_zeros
from napari_xrd.core.coords import dials_to_napari

__all__ = ["SpotsWidget", "shell_table"]


def shell_table(d, *, n_shells: int = 8) -> list[tuple[float, float, int]]:
    """Spots per resolution shell, shells equal in 1/d² (as in merging statistics).

    Parameters
    ----------
    d : (n,) array_like
        Resolution of each spot (Å); NaN/inf are ignored.

    Returns
    -------
    list of (d_max, d_min, count)
        Low to high resolution.
    """
    d = np.asarray(d, float)
    d = d[np.isfinite(d) & (d > 0)]
    if d.size == 0:
        return []
    s2 = 1.0 / d**2
    edges = np.linspace(s2.min(), s2.max() * (1 + 1e-9), n_shells + 1)
    counts, _ = np.histogram(s2, bins=edges)
    out = []
    for lo, hi, c in zip(edges[:-1], edges[1:], counts):
        out.append((float(1 / np.sqrt(lo)) if lo > 0 else float("inf"), float(1 / np.sqrt(hi)), int(c)))
    return out


def _format_shells(rows) -> str:
    if not rows:
        return "no spots with a resolution"
    lines = ["d max – d min (Å)   spots"]
    for dmax, dmin, c in rows:
        lines.append(f"{dmax:7.2f} – {dmin:5.2f}   {c:5d}  " + "▇" * min(c, 40))
    return "\n".join(lines)


def _model_record(options: dict) -> dict:
    """Name, sha256 and settings of what finds the spots (for provenance)."""
    if options.get("method") != "unet":
        return {"method": options.get("method", "dispersion"),
                **{k: v for k, v in options.items() if k not in ("method", "geometry")}}
    from napari_xrd.core.models.weights import WeightsError, find_model

    try:
        card = find_model(options.get("model", "default"), task="spots")
    except WeightsError:
        return {"method": "unet", "name": str(options.get("model"))}
    return {"method": "unet", "name": card.name, "sha256": card.card.get("sha256"),
            "threshold": options.get("threshold"), "shipped": card.shipped}


def _model_choices(_=None):
    from napari_xrd.core.models.weights import list_models

    return ["default"] + [c.name for c in list_models(task="spots")]


class SpotsWidget(Container):
    """Dock widget: find Bragg spots in the selected image layer."""

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        self._image = ComboBox(label="image", choices=self._image_choices)
        self._method = ComboBox(label="method", choices=["dispersion", "unet"], value="dispersion")
        self._sigma = FloatSpinBox(label="sigma strong", min=0.5, max=20.0, step=0.5, value=3.0,
                                   tooltip="dispersion: strong-pixel sigma (DIALS sigma_strong)")
        self._gain = FloatSpinBox(label="gain", min=0.01, max=100.0, step=0.1, value=1.0,
                                  tooltip="dispersion: detector gain")
        self._threshold = FloatSpinBox(label="probability", min=0.05, max=0.95, step=0.05, value=0.5,
                                       tooltip="U-Net: probability threshold for spot pixels")
        self._model = ComboBox(label="model", choices=_model_choices, tooltip="U-Net model")
        self._rings = ComboBox(label="ring background", choices=["auto", "on", "off"], value="auto",
                               tooltip="U-Net, with the detector geometry: subtract the water and ice rings' profile "
                               "in 2θ from the input so that weak spots on narrow rings are seen. auto: where a "
                               "cross-check of the beam centre passes (apply the beam centre first if the header's "
                               "is off); on: always; off: never")
        self._lattice = ComboBox(label="lattice search", choices=["auto", "off"], value="auto",
                                 tooltip="U-Net, with the detector geometry: where the frame's spots index as a "
                                 "still's lattice, test the positions it predicts that hold no spot yet and add the "
                                 "spots that stand out more than chance allows (feature predicted, orange). auto: "
                                 "on such frames; off: never")
        self._frames = ComboBox(label="frames", choices=["current", "all"], value="current")
        self._workers = SpinBox(label="workers", min=1, max=max(os.cpu_count() or 1, 1), value=1,
                                tooltip="all frames: worker processes, one frame each at a time with one CPU thread "
                                "(on the CPU, one per core is fastest); keep 1 with a GPU")
        self._ice = ComboBox(label="ice rings", choices=["auto", "filter", "keep"], value="auto",
                             tooltip="needs the detector geometry. auto: on a frame with spotty ice, drop the spots "
                             "more likely ice grains than Bragg spots; filter: drop spots on every ice ring (DIALS "
                             "filter.ice_rings); keep: drop none, flag them (feature ice_ring)")
        self._shadow = ComboBox(label="beamstop shadow", choices=["auto", "keep"], value="auto",
                                tooltip="auto: drop spots in the beamstop's shadow, found on the frame near the beam "
                                "centre; keep: keep them, flagged (feature beamstop_shadow, magenta)")
        self._run = PushButton(text="Find spots")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self._count = Label(label="spots", value="")
        self._shells = Label(label="shells", value="")
        self._sweep = Label(label="sweep", value="")
        super().__init__(
            widgets=[
                self._image, self._method, self._sigma, self._gain, self._threshold, self._model, self._rings,
                self._lattice, self._frames, self._workers,
                self._ice, self._shadow, self._run, self._cancel, self._progress, self._count, self._shells,
                self._sweep,
            ]
        )
        self._worker = None
        self._cancel_requested = False
        self._tables: dict[tuple[str, int], object] = {}
        self._stats: dict[tuple[str, int], dict] = {}  # frame_statistics of each (layer, frame) searched
        self._last_points_update = -float("inf")
        self._stale = None  # (image layer, labels, points) with results not yet shown
        self._method.changed.connect(self._update_enabled)
        self._frames.changed.connect(self._update_enabled)
        self._run.clicked.connect(self.run)
        self._cancel.clicked.connect(self.cancel)
        napari_viewer.layers.events.inserted.connect(self._refresh)
        napari_viewer.layers.events.removed.connect(self._refresh)
        napari_viewer.dims.events.current_step.connect(self._on_step)
        self._update_enabled()

    # ------------------------------------------------------------ choices
    def _image_choices(self, _=None):
        from napari.layers import Image

        return [(ly.name, ly) for ly in self._viewer.layers if isinstance(ly, Image)]

    def _refresh(self, event=None):
        self._image.reset_choices()

    def _update_enabled(self, _=None):
        unet = self._method.value == "unet"
        self._threshold.enabled = unet
        self._model.enabled = unet
        self._rings.enabled = unet
        self._lattice.enabled = unet
        self._sigma.enabled = not unet
        self._gain.enabled = not unet
        self._workers.enabled = self._frames.value == "all"

    # ------------------------------------------------------------ running
    def _frame_indices(self, layer) -> list[int]:
        if layer.data.ndim == 2:
            return [0]
        if self._frames.value == "all":
            return list(range(layer.data.shape[0]))
        return [int(self._viewer.dims.current_step[0])]

    def _options(self, has_geometry: bool) -> dict:
        common = {"ice_rings": self._ice.value if has_geometry or self._ice.value != "filter" else "keep",
                  "beamstop_shadow": self._shadow.value}
        if self._method.value == "unet":
            return {"method": "unet", "threshold": float(self._threshold.value), "model": self._model.value,
                    "ring_background": self._rings.value, "lattice_search": self._lattice.value, **common}
        return {"method": "dispersion", "sigma_strong": float(self._sigma.value), "gain": float(self._gain.value),
                **common}

    def run(self):
        """Start spot finding in a worker thread (the Find spots button)."""
        from napari.qt.threading import thread_worker

        from napari_xrd.core.spots import frame_statistics
        from napari_xrd.core.spots.frames import find_spots_in_frames

        layer = self._image.value
        if layer is None:
            self._count.value = "no image layer"
            return
        if self._worker is not None:
            return
        frames = self._frame_indices(layer)
        data = layer.data
        from napari_xrd._napari.layers import get_geometry

        geometry = get_geometry(layer)
        pixel_mask = layer.metadata.get("pixel_mask")
        options = self._options(geometry is not None)
        self._model_record = _model_record(options)
        nproc = int(self._workers.value) if len(frames) > 1 else 1
        self._cancel_requested = False
        is_cancelled = lambda: self._cancel_requested  # noqa: E731

        @thread_worker
        def work():
            n = len(frames)
            found = find_spots_in_frames(data, frames, nproc=nproc, geometry=geometry, pixel_mask=pixel_mask,
                                         cancel=is_cancelled, **options)
            for k, (f, labels, table) in enumerate(found):
                yield {"frame": f, "labels": labels, "table": table, "stats": frame_statistics(table),
                       "done": k + 1, "total": n}
            return n

        worker = work()
        self._progress.max = len(frames)
        self._progress.value = 0
        self._count.value = "running…"
        worker.yielded.connect(lambda r: self._show_result(layer, r))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._run.enabled = False
        self._cancel.enabled = True
        worker.start()

    def cancel(self):
        """Ask the running worker to stop after the current step."""
        self._cancel_requested = True
        if self._worker is not None:
            self._worker.quit()

    def _on_error(self, exc):
        from napari_xrd.core.progress import Cancelled

        self._count.value = "cancelled" if isinstance(exc, Cancelled) else f"error: {exc}"

    def _on_finished(self):
        self._flush()  # a cancelled or failed sweep: show the frames that were done
        self._worker = None
        self._run.enabled = True
        self._cancel.enabled = False
        if self._cancel_requested and not self._count.value.startswith("error"):
            self._count.value = "cancelled"

    # ------------------------------------------------------------ results (GUI thread)
    def _result_layers(self, layer):
        from napari.layers import Labels, Points

        lname, pname = f"{layer.name} spots", f"{layer.name} spot centres"
        labels = self._viewer.layers[lname] if lname in self._viewer.layers else None
        if not isinstance(labels, Labels) or labels.data.shape != layer.data.shape:
            if labels is not None:
                self._viewer.layers.remove(labels)
            # a sweep's worth of labels: memory only for the frames that get spots
            labels = self._viewer.add_labels(stack_zeros(layer.data.shape, np.int32), name=lname, opacity=0.6)
        points = self._viewer.layers[pname] if pname in self._viewer.layers else None
        if not isinstance(points, Points):
            points = self._viewer.add_points(
                np.zeros((0, layer.data.ndim)), name=pname, size=12, symbol="ring", face_color="transparent",
                border_color="yellow",
            )
        return labels, points

    def _show_result(self, layer, r):
        labels, points = self._result_layers(layer)
        # what predicted these spots: the corrections widget records it with every correction
        labels.metadata["model"] = points.metadata["model"] = dict(getattr(self, "_model_record", {}))
        f, lab, table = r["frame"], r["labels"], r["table"]
        if layer.data.ndim == 2:
            labels.data = lab
        else:
            old = labels.data[f]
            np.copyto(old, lab, where=(lab != 0) | (old != 0))  # only where spots are or were: the rest stays sparse
        self._tables[(layer.name, f)] = table
        self._stats[(layer.name, f)] = r["stats"]
        self._progress.value = r["done"]
        # the Points layer holds every frame's spots; over a long sweep rebuild it at most every second
        now = time.monotonic()
        last = r["done"] == r["total"]
        self._stale = (layer, labels, points)
        if last or now - self._last_points_update >= 1.0:
            self._flush()
        # the figures of the frame on screen once it is done; until then those of the frame just done
        shown = self._current_frame(layer)
        self._update_count(layer, f if (layer.name, shown) not in self._tables else shown)

    def _flush(self):
        """Show what the worker has sent since the last update (labels of a stack, the Points layer)."""
        if self._stale is None:
            return
        layer, labels, points = self._stale
        self._stale = None
        self._last_points_update = time.monotonic()
        if layer.data.ndim == 3:
            labels.refresh()
        self._update_points(layer, points)
        self._update_sweep(layer)

    def _update_points(self, layer, points):
        coords = []
        feats = {k: [] for k in ("intensity", "d", "size", "sigma_radial", "sigma_azimuthal", "snr", "ice_ring",
                                 "ice_probability", "beamstop_shadow", "predicted", "frame")}
        for (name, fr), t in sorted(self._tables.items(), key=lambda kv: kv[0][1]):
            if name != layer.name or len(t) == 0:
                continue
            rc = dials_to_napari(t.fast_slow())
            if layer.data.ndim == 3:
                rc = np.column_stack([np.full(len(rc), fr), rc])
            coords.append(rc)
            feats["intensity"].append(t["intensity"])
            feats["d"].append(t["d"])
            feats["size"].append(t["size"])
            for extent in ("sigma_radial", "sigma_azimuthal"):
                feats[extent].append(np.asarray(t.get(extent, np.full(len(t), np.nan)), float))
            feats["snr"].append(np.asarray(t.get("snr", np.full(len(t), np.nan)), float))
            feats["ice_probability"].append(np.asarray(t.get("ice_probability", np.zeros(len(t))), float))
            for flag in ("ice_ring", "beamstop_shadow", "predicted"):
                feats[flag].append(np.asarray(t.get(flag, np.zeros(len(t), bool)), bool))
            feats["frame"].append(np.full(len(t), fr))
        data = np.concatenate(coords) if coords else np.zeros((0, layer.data.ndim))
        points.data = data
        points.features = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in feats.items()}
        if len(data):  # found at lattice-predicted positions in orange; flagged spots ("keep"): ice grains in cyan,
            # in the beamstop shadow in magenta; others yellow
            colours = np.tile(np.array([1.0, 1.0, 0.0, 1.0]), (len(data), 1))
            colours[np.asarray(points.features["predicted"], bool)] = (1.0, 0.55, 0.0, 1.0)
            colours[np.asarray(points.features["ice_ring"], bool)] = (0.0, 1.0, 1.0, 1.0)
            colours[np.asarray(points.features["beamstop_shadow"], bool)] = (1.0, 0.0, 1.0, 1.0)
            points.border_color = colours

    def _current_frame(self, layer) -> int:
        return int(self._viewer.dims.current_step[0]) if layer.data.ndim == 3 else 0

    def _on_step(self, event=None):
        """The slider moved: show the figures of the frame now on screen, if it has been searched."""
        layer = self._image.value
        if layer is None or layer.data.ndim != 3:
            return
        f = self._current_frame(layer)
        if (layer.name, f) in self._tables:
            self._update_count(layer, f)

    def _update_count(self, layer, f):
        """Spot count, flags, resolution and shells of frame ``f`` (its table and statistics, already computed)."""
        table, stats = self._tables[(layer.name, f)], self._stats[(layer.name, f)]
        n_ice = int(np.count_nonzero(table["ice_ring"])) if "ice_ring" in table else 0
        n_all = sum(len(t) for (name, _), t in self._tables.items() if name == layer.name)
        count = f"{len(table)} in frame {f}" + (f" ({n_all} in all frames)" if layer.data.ndim == 3 else "")
        n_shadow = int(np.count_nonzero(table["beamstop_shadow"])) if "beamstop_shadow" in table else 0
        d_min = stats["estimated_d_min"]
        self._count.value = (count + (f"; {n_ice} on ice rings (cyan)" if n_ice else "")
                             + (f"; {n_shadow} in the beamstop shadow (magenta)" if n_shadow else "")
                             + (f"; spots reach {d_min:.2f} Å" if d_min is not None else ""))
        self._shells.value = _format_shells(shell_table(table["d"]))

    def _update_sweep(self, layer):
        """Spots per frame over a stack's searched frames: a bar strip, the busiest and the furthest-reaching frame."""
        from napari_xrd.core.spots.statistics import spot_count_strip, sweep_highlights

        if layer.data.ndim != 3:
            self._sweep.value = ""
            return
        done = {f: st for (name, f), st in self._stats.items() if name == layer.name}
        if len(done) < 2:
            self._sweep.value = ""
            return
        n = layer.data.shape[0]
        counts = np.full(n, np.nan)
        for f, st in done.items():
            counts[f] = st["n_spots"]
        text = f"frames 0–{n - 1}, {len(done)} searched: {spot_count_strip(counts)}\n"
        text += sweep_highlights(done)
        self._sweep.value = text
