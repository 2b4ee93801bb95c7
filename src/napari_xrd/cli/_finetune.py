"""``--from-corrections``: the fine-tuning options shared by every ``napari-xrd train TASK``."""

from __future__ import annotations

import json
import shlex
import sys


def add_finetune_arguments(p) -> None:
    """Add --from-corrections, --base, --heldout-fraction, --no-promote to a train parser."""
    g = p.add_argument_group("fine-tuning on corrections")
    g.add_argument("--from-corrections", metavar="STORE",
                   help="fine-tune on a corrections store instead: a held-out part of the corrections scores the "
                        "base and the new model; the new model goes to the user model directory and becomes the "
                        "default only if it is better")
    g.add_argument("--base", default="default", help="the model to start from (default: default)")
    g.add_argument("--heldout-fraction", type=float, default=0.25, help="share of corrected images held out (0.25)")
    g.add_argument("--no-promote", action="store_true", help="never change the default model")
    g.add_argument("--ft-name", metavar="NAME", help="name of the new model (default: BASE-ftN-TIME)")


def run_finetune(args, task: str, *, simulated=None) -> int:
    """Fine-tune through :func:`napari_xrd.core.training.finetune.finetune`; prints the scores."""
    from napari_xrd.core.progress import tqdm_progress
    from napari_xrd.core.training.finetune import finetune

    parts = ["napari-xrd", "train", task, "--from-corrections", args.from_corrections, "--base", args.base,
             "--epochs", str(args.epochs), "--seed", str(args.seed), "--heldout-fraction", str(args.heldout_fraction)]
    if simulated:
        parts += ["--data", *simulated]
    with tqdm_progress(f"fine-tune {task}", disable=getattr(args, "quiet", False) or None) as bar:
        report = finetune(
            args.from_corrections,
            task=task,
            base=args.base,
            simulated=simulated,
            epochs=args.epochs,
            heldout_fraction=args.heldout_fraction,
            seed=args.seed,
            device=getattr(args, "device", "auto"),
            name=args.ft_name,
            promote_if_better=not args.no_promote,
            command=" ".join(shlex.quote(p) for p in parts),
            progress=bar,
        )
    print(report.summary(), file=sys.stderr)
    print(json.dumps({"model": report.new_model_path, "promoted": report.promoted, "base": report.base,
                      "heldout_base": report.base_scores, "heldout_new": report.new_scores}))
    return 0
