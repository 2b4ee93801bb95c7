"""Fine-tuning a shipped model on user corrections, for any task.

The loop is the same for every task (spots, beam centre, and later anomaly
labels or loop-photo centring):

1. read the corrections store and keep the examples that carry the task's
   target;
2. split them by image into a training part and a held-out part (the
   held-out frames never reach the optimiser);
3. score the base model on the held-out corrections;
4. train from the base weights on the training corrections mixed with
   simulated examples (so the model keeps what it knew);
5. score the new model on the same held-out corrections;
6. save it as a new, versioned model in the user model directory (never
   over a shipped model), with a model card holding both scores;
7. make it the task's default only if it scored better.

A task plugs in with a :class:`FinetuneTask` registered under its name.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from napari_xrd.core.progress import check_cancel, report

__all__ = ["FinetuneTask", "FinetuneReport", "register_task", "finetune", "split_heldout", "promote", "TASKS"]


@dataclass
class FinetuneTask:
    """How one task takes part in fine-tuning.

    Attributes
    ----------
    name : str
        Task name as in model cards ("spots", "beam_center").
    metric : str
        Key of the score that decides promotion (higher is better).
    has_target : callable(Example) -> bool
        Whether a correction carries this task's target.
    evaluate : callable(model, examples, *, device, seed) -> dict
        Scores on examples; must contain ``metric``.
    train : callable(model, card, train_examples, simulated_examples, *, epochs, seed, device, progress, cancel) -> model
        Continue training ``model`` (loaded from the base card).
    """

    name: str
    metric: str
    has_target: Callable
    evaluate: Callable
    train: Callable


TASKS: dict[str, FinetuneTask] = {}


def register_task(task: FinetuneTask) -> FinetuneTask:
    TASKS[task.name] = task
    return task


def _get_task(name: str) -> FinetuneTask:
    """A registered task by its model-card name ("beam_center" also finds "beam-center")."""
    import importlib

    for key in (name, name.replace("_", "-")):
        if key in TASKS:
            return TASKS[key]
    try:
        importlib.import_module(f"napari_xrd.core.training.finetune_{name.replace('-', '_')}")
    except ModuleNotFoundError:
        pass
    for key in (name, name.replace("_", "-")):
        if key in TASKS:
            return TASKS[key]
    raise ValueError(f"no fine-tuning for task {name!r}; known: {', '.join(sorted(TASKS)) or 'none'}")


@dataclass
class FinetuneReport:
    """What a fine-tuning run did (printed by the CLI, shown by the widget)."""

    task: str
    base: str
    new_model: str | None
    new_model_path: str | None
    n_train: int
    n_heldout: int
    base_scores: dict
    new_scores: dict
    metric: str
    promoted: bool
    history: list = field(default_factory=list)

    @property
    def gain(self) -> float:
        return float(self.new_scores.get(self.metric, np.nan) - self.base_scores.get(self.metric, np.nan))

    def summary(self) -> str:
        keys = sorted(set(self.base_scores) | set(self.new_scores))
        lines = [
            f"task {self.task}: base {self.base} -> {self.new_model or '(not saved)'}",
            f"corrections: {self.n_train} for training, {self.n_heldout} held out",
            f"{'held-out score':<24}{'base':>10}{'fine-tuned':>12}",
        ]
        for k in keys:
            b, n = self.base_scores.get(k, np.nan), self.new_scores.get(k, np.nan)
            lines.append(f"{k:<24}{b:>10.4f}{n:>12.4f}")
        verdict = "now the default" if self.promoted else "not better: the default is unchanged"
        lines.append(f"{self.metric} gain {self.gain:+.4f}: {verdict}")
        return "\n".join(lines)


def split_heldout(examples, *, fraction: float = 0.25, seed: int = 0) -> tuple[list, list]:
    """Split corrections by image into (train, held_out), deterministically.

    All corrections of one (file, frame) go to the same side; at least one
    image goes to each side when there are two or more.
    """
    groups: dict[tuple, list] = {}
    for ex in examples:
        key = (ex.provenance.get("file", ex.example_id), ex.provenance.get("frame", 0))
        groups.setdefault(key, []).append(ex)
    keys = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    if len(keys) < 2:
        raise ValueError(f"fine-tuning needs corrections of at least 2 images, found {len(keys)}")
    n_held = min(len(keys) - 1, max(1, int(round(fraction * len(keys)))))
    held = [ex for k in keys[:n_held] for ex in groups[k]]
    train = [ex for k in keys[n_held:] for ex in groups[k]]
    return train, held


def promote(task: str, model_name: str, *, models_dir=None) -> Path:
    """Make ``model_name`` the user's default model for ``task`` (atomic pointer file)."""
    from napari_xrd.core.models.weights import user_model_dir

    d = Path(models_dir) if models_dir is not None else user_model_dir()
    d.mkdir(parents=True, exist_ok=True)
    pointer = d / f"default-{task}.txt"
    tmp = pointer.with_suffix(".txt.tmp")
    tmp.write_text(model_name + "\n")
    os.replace(tmp, pointer)
    return pointer


def _next_name(base_name: str, directory: Path) -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    root = base_name.split("-ft")[0]
    n = 1 + sum(1 for p in directory.glob(f"{root}-ft*.json")) if directory.is_dir() else 1
    return f"{root}-ft{n}-{stamp}"


def finetune(
    corrections,
    *,
    task: str,
    base: str = "default",
    simulated=None,
    epochs: int = 5,
    heldout_fraction: float = 0.25,
    seed: int = 0,
    device="auto",
    models_dir=None,
    name: str | None = None,
    promote_if_better: bool = True,
    command: str = "",
    progress=None,
    cancel=None,
) -> FinetuneReport:
    """Fine-tune the ``base`` model of ``task`` on a corrections store.

    Parameters
    ----------
    corrections : str or Path
        A corrections store (or any dataset directory of corrections).
    task : str
        "spots" or "beam_center" (or another registered task).
    base : str
        Model to start from: "default", a model name or a card path.
    simulated : str or Path or sequence, optional
        Dataset directories of simulated examples mixed into training.
    epochs : int
    heldout_fraction : float
        Share of corrected images held out for scoring.
    seed : int
    device : str
    models_dir : path, optional
        Where the new model goes (default: the user model directory).
    name : str, optional
        New model name (default: ``<base>-ftN-<UTC time>``).
    promote_if_better : bool
        Make the new model the default when it beats the base.
    command : str
        The command line, recorded in the model card.
    progress, cancel : callables, optional

    Returns
    -------
    FinetuneReport
    """
    from napari_xrd.core.dataset import open_dataset
    from napari_xrd.core.models.weights import load_model, save_model, user_model_dir

    t = _get_task(task)
    models_dir = Path(models_dir) if models_dir is not None else user_model_dir()
    report(progress, 0, 1, "reading corrections")
    with open_dataset(corrections, on_error="skip") as ds:
        examples = [ex for ex in ds if t.has_target(ex)]
    if not examples:
        raise ValueError(f"{corrections}: no corrections with a {t.name} target")
    train_ex, held_ex = split_heldout(examples, fraction=heldout_fraction, seed=seed)
    sim_ex = []
    if simulated:
        paths = [simulated] if isinstance(simulated, (str, Path)) else list(simulated)
        for p in paths:
            with open_dataset(p, on_error="skip") as sds:
                sim_ex += [ex for ex in sds if t.has_target(ex)]
    check_cancel(cancel)
    base_model, base_card = load_model(base, task=t.name, device=device)
    report(progress, 0, 1, "scoring the base model on held-out corrections")
    base_scores = t.evaluate(base_model, held_ex, device=device, seed=seed)
    import copy

    model = copy.deepcopy(base_model)
    model = t.train(
        model, base_card, train_ex, sim_ex, epochs=epochs, seed=seed, device=device, progress=progress, cancel=cancel
    )
    check_cancel(cancel)
    new_scores = t.evaluate(model, held_ex, device=device, seed=seed)
    new_name = name or _next_name(base_card.name, models_dir)
    card = {
        "name": new_name,
        "task": t.name,
        "architecture": base_card.card["architecture"],
        "config": base_card.card["config"],
        "module": base_card.card.get("module"),
        "base": {"name": base_card.name, "sha256": base_card.card["sha256"]},
        "training_command": command or f"finetune(corrections={str(corrections)!r}, task={t.name!r}, base={base!r}, epochs={epochs}, seed={seed})",
        "data": {
            "corrections": str(Path(corrections).resolve()),
            "train_example_ids": [ex.example_id for ex in train_ex],
            "heldout_example_ids": [ex.example_id for ex in held_ex],
            "simulated": None if not simulated else [str(p) for p in ([simulated] if isinstance(simulated, (str, Path)) else simulated)],
            "n_simulated": len(sim_ex),
        },
        "seed": seed,
        "metrics": {"heldout_corrections_base": base_scores, "heldout_corrections": new_scores},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if card["module"] is None:
        card.pop("module")
    for key in ("inference", "input", "threshold"):  # how the base model is run carries over
        if key in base_card.card:
            card[key] = base_card.card[key]
    saved = save_model(model, card, models_dir)
    better = new_scores.get(t.metric, -np.inf) > base_scores.get(t.metric, np.inf)
    if better and promote_if_better:
        promote(t.name, new_name, models_dir=models_dir)
    report(progress, 1, 1, "done")
    return FinetuneReport(
        task=t.name,
        base=base_card.name,
        new_model=new_name,
        new_model_path=str(saved.weights_path),
        n_train=len(train_ex),
        n_heldout=len(held_ex),
        base_scores=base_scores,
        new_scores=new_scores,
        metric=t.metric,
        promoted=bool(better and promote_if_better),
    )
