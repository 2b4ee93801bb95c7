"""The one loader for model weights, with model cards and hash checks.

A model is two files side by side:

``NAME.pt``
    ``torch.save`` of a plain ``state_dict``.
``NAME.json``
    Its model card::

        {
          "name": "spots-unet-v1",
          "task": "spots",                 # which widget/CLI uses it
          "architecture": "attention_unet",  # key in ARCHITECTURES
          "config": {...},                 # keyword arguments of the builder
          "training_command": "napari-xrd train spots ...",
          "data": "...", "seed": 0,
          "metrics": {...},
          "sha256": "<hex digest of NAME.pt>",
          "created": "2026-11-21T...", "base": null
        }

Shipped models live in ``napari_xrd/weights/``; models that users fine-tune
go to the user model directory (``$NAPARI_XRD_HOME/models`` or
``~/.local/share/napari-xrd/models``) and never over a shipped one.
Architectures register a builder with :func:`register_architecture`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = [
    "ModelCard",
    "WeightsError",
    "register_architecture",
    "shipped_model_dir",
    "user_model_dir",
    "list_models",
    "find_model",
    "load_model",
    "save_model",
    "sha256_file",
    "flush_tiny_weights",
]

ARCHITECTURES: dict[str, Callable] = {}


class WeightsError(ValueError):
    """A weights file that is missing, corrupt or does not match its card."""


def register_architecture(name: str):
    """Decorator: register a model builder ``builder(**config) -> nn.Module``."""

    def deco(fn):
        ARCHITECTURES[name] = fn
        return fn

    return deco


def shipped_model_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "weights"


def user_model_dir() -> Path:
    home = os.environ.get("NAPARI_XRD_HOME")
    base = Path(home) if home else Path.home() / ".local" / "share" / "napari-xrd"
    return base / "models"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelCard:
    path: Path  # the .json card
    card: dict

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def task(self) -> str:
        return self.card.get("task", "")

    @property
    def weights_path(self) -> Path:
        return self.path.with_suffix(".pt")

    @property
    def shipped(self) -> bool:
        return self.path.parent == shipped_model_dir()


def _read_card(path: Path) -> ModelCard:
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: unreadable model card ({exc})") from exc
    for key in ("name", "architecture", "config", "sha256"):
        if key not in card:
            raise WeightsError(f"{path}: model card lacks {key!r}")
    return ModelCard(Path(path), card)


def list_models(task: str | None = None) -> list[ModelCard]:
    """Shipped and user models (shipped first), optionally for one task."""
    cards = []
    for d in (shipped_model_dir(), user_model_dir()):
        if d.is_dir():
            for p in sorted(d.glob("*.json")):
                try:
                    c = _read_card(p)
                except WeightsError:
                    continue
                if task is None or c.task == task:
                    cards.append(c)
    return cards


def find_model(name_or_path, task: str | None = None) -> ModelCard:
    """A model card by name, by path to its .json/.pt, or "default" for a task.

    "default" is the user's promoted model for the task if there is one
    (``user_model_dir()/default-<task>.txt`` names it), else the newest
    shipped one (by the card's ``created``).
    """
    p = Path(str(name_or_path))
    if p.suffix in (".json", ".pt") and p.exists():
        return _read_card(p.with_suffix(".json"))
    name = str(name_or_path)
    if name == "default":
        if task is None:
            raise WeightsError("'default' needs a task")
        pointer = user_model_dir() / f"default-{task}.txt"
        if pointer.exists():
            name = pointer.read_text().strip()
        else:
            shipped = [c for c in list_models(task) if c.shipped]
            if not shipped:
                raise WeightsError(f"no shipped model for task {task!r} in {shipped_model_dir()}")
            return max(shipped, key=lambda c: str(c.card.get("created", "")))
    for c in list_models(task):
        if c.name == name:
            return c
    raise WeightsError(f"no model named {name!r}" + (f" for task {task!r}" if task else ""))


def flush_tiny_weights(state: dict, *, below: float = 1e-20) -> dict:
    """The state with floating-point values smaller than ``below`` in magnitude set to 0.

    Weight decay drives the weights of dead channels towards 0, down to
    subnormal numbers (below ~1.2e-38 in float32) and just above them.  They
    change no output (against activations and weights of order 1e-3 to 1e6,
    a weight of 1e-20 is 14 orders below float32's resolution), but CPU
    arithmetic on the subnormal products they make is many times slower: a
    Pilatus 6M frame took 16 s instead of 1.5 s.
    """
    import torch

    out = {}
    for k, v in state.items():
        if torch.is_tensor(v) and v.is_floating_point():
            v = torch.where(v.abs() < below, torch.zeros((), dtype=v.dtype), v)
        out[k] = v
    return out


@functools.lru_cache(maxsize=8)
def _load_cached(card_path: str, mtime: float, device: str):
    import torch

    card = _read_card(Path(card_path))
    wpath = card.weights_path
    if not wpath.exists():
        raise WeightsError(f"{wpath}: weights file missing")
    digest = sha256_file(wpath)
    if digest != card.card["sha256"]:
        raise WeightsError(
            f"{wpath}: sha256 {digest[:12]}… does not match the model card's "
            f"{card.card['sha256'][:12]}… (corrupt or replaced weights)"
        )
    arch = card.card["architecture"]
    if arch not in ARCHITECTURES:
        # builders register on import of their module
        import importlib

        importlib.import_module(card.card.get("module", f"napari_xrd.core.models.{arch}"))
    if arch not in ARCHITECTURES:
        raise WeightsError(f"{card.path}: unknown architecture {arch!r}")
    model = ARCHITECTURES[arch](**card.card["config"])
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
        model.load_state_dict(flush_tiny_weights(state))
    except Exception as exc:  # torch raises many types for a bad file
        raise WeightsError(f"{wpath}: cannot load weights ({type(exc).__name__}: {exc})") from exc
    model.eval()
    model.inference_options = dict(card.card.get("inference", {}))  # how to run it (tiles, input normalisation...)
    return model.to(device)


def load_model(name_or_path="default", *, task: str | None = None, device="auto"):
    """Build a model from its card and weights, verify the hash, move it to ``device``.

    Models are cached per (card, device): repeated calls are cheap.

    Returns
    -------
    model : torch.nn.Module
        In eval mode.
    card : ModelCard
    """
    from napari_xrd.core.device import select_device

    card = find_model(name_or_path, task)
    dev = select_device(device)
    model = _load_cached(str(card.path), card.path.stat().st_mtime, str(dev))
    return model, card


def save_model(model, card: dict, directory) -> ModelCard:
    """Write ``NAME.pt`` and ``NAME.json`` atomically; refuse to overwrite.

    ``card`` needs at least name, task, architecture and config; sha256 is
    filled in here.
    """
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wpath = directory / f"{card['name']}.pt"
    cpath = wpath.with_suffix(".json")
    if wpath.exists() or cpath.exists():
        raise WeightsError(f"{wpath}: a model with this name exists; choose a new name")
    tmp = wpath.with_suffix(".pt.tmp")
    state = flush_tiny_weights({k: v.detach().cpu() for k, v in model.state_dict().items()})
    torch.save(state, tmp)
    os.replace(tmp, wpath)
    card = dict(card)
    card["sha256"] = sha256_file(wpath)
    tmpc = cpath.with_suffix(".json.tmp")
    tmpc.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    os.replace(tmpc, cpath)
    return ModelCard(cpath, card)
