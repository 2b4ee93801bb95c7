"""User corrections of model predictions, stored as training data.

:func:`make_correction` turns what a user corrected (spot mask, spot
positions, beam centre/tilt, anomaly labels) and what the model predicted
into one :class:`~napari_xrd.core.dataset.Example` with full provenance;
:class:`~napari_xrd.core.corrections.store.CorrectionStore` keeps it safe.
"""

from __future__ import annotations

import numpy as np

from napari_xrd.core.corrections.store import (
    CorrectionConflict,
    CorrectionRecord,
    CorrectionStore,
    StoreLockTimeout,
    canonical_source,
    provenance_stamp,
)
from napari_xrd.core.dataset import Example, frame_sha256
from napari_xrd.core.geometry import DetectorGeometry

__all__ = [
    "CorrectionStore",
    "CorrectionConflict",
    "CorrectionRecord",
    "StoreLockTimeout",
    "make_correction",
    "describe_changes",
]


def describe_changes(
    *,
    spot_mask=None,
    predicted_spot_mask=None,
    spots=None,
    predicted_spots=None,
    geometry: DetectorGeometry | None = None,
    predicted_geometry: DetectorGeometry | None = None,
    anomaly_labels=None,
    predicted_anomaly_labels=None,
    match_px: float = 1.5,
) -> dict:
    """Summarise what the user changed relative to the prediction.

    Spot positions are ``(n, 2)`` arrays of ``(fast, slow)``; a corrected
    spot within ``match_px`` of a predicted one counts as kept.

    Returns
    -------
    dict
        JSON-serialisable: ``spot_mask_added_px``, ``spot_mask_removed_px``,
        ``spots_added``, ``spots_removed``, ``beam_center_shift_px``,
        ``tilt_change_deg``, ``anomaly_labels_changed`` (only keys that apply).
    """
    out: dict = {}
    if spot_mask is not None and predicted_spot_mask is not None:
        a, p = np.asarray(spot_mask, bool), np.asarray(predicted_spot_mask, bool)
        out["spot_mask_added_px"] = int(np.count_nonzero(a & ~p))
        out["spot_mask_removed_px"] = int(np.count_nonzero(p & ~a))
    if spots is not None and predicted_spots is not None:
        s = np.asarray(spots, float).reshape(-1, 2)
        q = np.asarray(predicted_spots, float).reshape(-1, 2)
        if len(s) and len(q):
            from scipy.spatial import cKDTree

            d_new, _ = cKDTree(q).query(s)
            d_old, _ = cKDTree(s).query(q)
            out["spots_added"] = int(np.count_nonzero(d_new > match_px))
            out["spots_removed"] = int(np.count_nonzero(d_old > match_px))
        else:
            out["spots_added"], out["spots_removed"] = len(s), len(q)
    if geometry is not None and predicted_geometry is not None:
        out["beam_center_shift_px"] = float(
            np.hypot(*(np.subtract(geometry.beam_center, predicted_geometry.beam_center)))
        )
        out["tilt_change_deg"] = float(
            np.hypot(geometry.pitch - predicted_geometry.pitch, geometry.yaw - predicted_geometry.yaw)
        )
    if anomaly_labels is not None:
        new = np.asarray(anomaly_labels, np.int8)
        old = np.full_like(new, -1) if predicted_anomaly_labels is None else np.asarray(predicted_anomaly_labels, np.int8)
        out["anomaly_labels_changed"] = int(np.count_nonzero(new != old))
    return out


def make_correction(
    image: np.ndarray,
    *,
    source_file,
    frame: int = 0,
    pixel_mask=None,
    spot_mask=None,
    spots=None,
    geometry: DetectorGeometry | None = None,
    anomaly_labels=None,
    predicted_spot_mask=None,
    predicted_spots=None,
    predicted_geometry: DetectorGeometry | None = None,
    predicted_anomaly_labels=None,
    header_geometry: DetectorGeometry | None = None,
    models: dict | None = None,
) -> Example:
    """One user correction as a training example with full provenance.

    Parameters
    ----------
    image : (n_slow, n_fast) ndarray
        The frame's raw pixels, exactly as read.
    source_file : str or Path
        The file the frame came from.
    frame : int
        Frame index within the file.
    pixel_mask : (n_slow, n_fast) uint32 ndarray, optional
    spot_mask : (n_slow, n_fast) bool ndarray, optional
        Corrected spot mask.
    spots : (n, 2) ndarray, optional
        Corrected spot positions ``(fast, slow)``, corner convention.
    geometry : DetectorGeometry, optional
        Corrected geometry (beam centre, tilt).
    anomaly_labels : (7,) int array, optional
        1 present / 0 absent / -1 not labelled, in ``ANOMALY_CLASSES`` order.
    predicted_* : optional
        What the models proposed before the user's changes.
    header_geometry : DetectorGeometry, optional
        The geometry in the file's header.
    models : dict, optional
        Per task, the model that predicted: ``{"spots": {"name": ..., "sha256": ...}}``.

    Returns
    -------
    Example
        ``kind="correction"``; ``extra`` holds the predicted spot mask.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"a correction is made on one frame (2-D), got shape {image.shape}")
    for name, arr in (("pixel_mask", pixel_mask), ("spot_mask", spot_mask), ("predicted_spot_mask", predicted_spot_mask)):
        if arr is not None and np.shape(arr) != image.shape:
            raise ValueError(f"{name} shape {np.shape(arr)} does not match the frame {image.shape}")
    table = None
    if spots is not None:
        s = np.asarray(spots, float).reshape(-1, 2)
        table = {"fast": s[:, 0], "slow": s[:, 1]}
    changed = describe_changes(
        spot_mask=spot_mask,
        predicted_spot_mask=predicted_spot_mask,
        spots=spots,
        predicted_spots=predicted_spots,
        geometry=geometry,
        predicted_geometry=predicted_geometry,
        anomaly_labels=anomaly_labels,
        predicted_anomaly_labels=predicted_anomaly_labels,
    )
    provenance = {
        "source": "correction",
        "file": canonical_source(source_file),
        "frame": int(frame),
        "frame_sha256": frame_sha256(image),
        "header_geometry": None if header_geometry is None else header_geometry.to_dict(),
        "predicted_geometry": None if predicted_geometry is None else predicted_geometry.to_dict(),
        "predicted_anomaly_labels": None
        if predicted_anomaly_labels is None
        else [int(v) for v in np.asarray(predicted_anomaly_labels)],
        "models": models or {},
        "changed": changed,
        **provenance_stamp(),
    }
    extra = {}
    if predicted_spot_mask is not None:
        extra["predicted_spot_mask"] = np.asarray(predicted_spot_mask, np.uint8)
    if predicted_spots is not None:
        extra["predicted_spots"] = np.asarray(predicted_spots, float).reshape(-1, 2)
    return Example(
        image=image,
        pixel_mask=None if pixel_mask is None else np.asarray(pixel_mask, np.uint32),
        spot_mask=None if spot_mask is None else np.asarray(spot_mask, bool),
        spots=table,
        geometry=geometry,
        anomaly_labels=None if anomaly_labels is None else np.asarray(anomaly_labels, np.int8),
        provenance=provenance,
        extra=extra,
        kind="correction",
    )
