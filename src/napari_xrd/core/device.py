"""Choosing the compute device, in one place.

``select_device("auto")`` gives CUDA when a GPU is present, else the CPU.  The
environment variable ``NAPARI_XRD_DEVICE`` overrides "auto" (e.g. ``cpu`` to
keep a shared GPU free).  Inference runs in mixed precision on CUDA (fp16
autocast) and in float32 on the CPU; ``precision="mixed"`` adds bf16 autocast
on the CPU (fast on CPUs with native bf16 instructions, AVX512-BF16 or AMX),
``precision="float32"`` keeps full precision everywhere, and
``NAPARI_XRD_PRECISION`` sets what "auto" means.
"""

from __future__ import annotations

import os

__all__ = ["select_device", "autocast_context", "PRECISIONS", "flush_denormals"]

PRECISIONS = ("auto", "float32", "mixed")


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


def autocast_context(device, enabled: bool = True, *, precision: str | None = "auto"):
    """Mixed-precision context for inference on ``device``.

    ``precision`` "auto" (or None; ``$NAPARI_XRD_PRECISION`` where that is
    set): fp16 autocast on CUDA, nothing elsewhere; "mixed": also bf16
    autocast on the CPU (fast with native bf16 instructions, slower than
    float32 without them); "float32": nothing anywhere.  A no-op when
    ``enabled`` is False.
    """
    import contextlib

    import torch

    if precision in (None, "auto"):
        precision = os.environ.get("NAPARI_XRD_PRECISION", "auto")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    kind = getattr(device, "type", str(device))
    if not enabled or precision == "float32":
        return contextlib.nullcontext()
    if kind == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if kind == "cpu" and precision == "mixed":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class flush_denormals:
    """Context in which CPU float arithmetic treats subnormal numbers as 0.

    Weight decay drives unused weights (and their Adam moments) towards 0,
    through the subnormal range (below ~1.2e-38 in float32), where x86
    arithmetic is many times slower: late in a CPU training run a step took
    twice as long as early on.  The previous setting is restored on exit.
    Sets nothing on a CPU without the instructions (``set_flush_denormal``
    returns False there).
    """

    def __enter__(self):
        import torch

        self._before = bool((torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() == 0.0)
        torch.set_flush_denormal(True)
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_flush_denormal(self._before)
        return False
