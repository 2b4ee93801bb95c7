"""Choosing the compute device, in one place.

``select_device("auto")`` gives CUDA when a GPU is present, else the CPU.  The
environment variable ``NAPARI_XRD_DEVICE`` overrides "auto" (e.g. ``cpu`` to
keep a shared GPU free).  Mixed precision (fp16 autocast) is used on CUDA.
"""

from __future__ import annotations

import os

__all__ = ["select_device", "autocast_context"]


def select_device(device: str | None = "auto"):
    """Resolve a device request to a ``torch.device``.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"} or None
        "auto" (or None) picks ``$NAPARI_XRD_DEVICE`` if set, else CUDA when
        available, else the CPU.

    Raises
    ------
    ValueError
        If a GPU is requested but not available.
    """
    import torch

    if device in (None, "auto"):
        device = os.environ.get("NAPARI_XRD_DEVICE", "auto")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA GPU is available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available")
    return dev


def autocast_context(device, enabled: bool = True):
    """fp16 autocast on CUDA, a no-op context elsewhere."""
    import contextlib

    import torch

    if enabled and getattr(device, "type", str(device)) == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
