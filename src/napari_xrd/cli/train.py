"""``napari-xrd train TASK ...``: training and fine-tuning commands.

Each task lives in its own module ``napari_xrd.cli.train_<task>`` with
``add_parser(subparsers)``, like the top-level commands.
"""

from __future__ import annotations

import importlib
import importlib.util

TASK_MODULES = ["train_spots", "train_beam_center"]


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model (spots, beam-center)")
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    for name in TASK_MODULES:
        modname = f"napari_xrd.cli.{name}"
        if importlib.util.find_spec(modname) is not None:
            importlib.import_module(modname).add_parser(tasks)
    p.set_defaults(func=lambda args: p.print_help() or 2)
