"""``napari-xrd train beam-center``: train the coarse beam-centre ResNet."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from napari_xrd.cli._finetune import add_finetune_arguments, run_finetune


def add_parser(tasks) -> None:
    p = tasks.add_parser(
        "beam-center",
        help="train the beam-centre/tilt ResNet on synthetic frames",
        description="Train napari-xrd's coarse beam-centre/tilt ResNet on frames rendered on the fly "
        "(napari_xrd.core.training.beam_center) and save it with a model card.",
    )
    p.add_argument("--name", default="beam-center-resnet-v1", help="model name (file stem)")
    p.add_argument("--out", default=None, help="directory (default: the user model directory)")
    p.add_argument("--n-train", type=int, default=6000)
    p.add_argument("--n-val", type=int, default=600)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=128, help="input side in pixels")
    p.add_argument("--render-size", type=int, default=256, help="side of the rendered training frames")
    p.add_argument("--max-offset-mm", type=float, default=3.0, help="true centre within this of the header's")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=None, help="stop after the epoch that passes this many s")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (fine-tuning)")
    add_finetune_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.from_corrections:
        return run_finetune(args, "beam-center")
    from napari_xrd.core.models.weights import save_model, user_model_dir
    from napari_xrd.core.progress import tqdm_progress
    from napari_xrd.core.training.beam_center import train_beam_center_model

    with tqdm_progress("train beam-center") as cb:
        model, metrics = train_beam_center_model(
            n_train=args.n_train,
            n_val=args.n_val,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            size=args.size,
            lr=args.lr,
            time_limit_s=args.time_limit,
            render_size=args.render_size,
            max_offset_mm=args.max_offset_mm,
            progress=cb,
        )
    card = {
        "name": args.name,
        "task": "beam-center",
        "architecture": "resnet_center",
        "module": "napari_xrd.core.models.resnet_center",
        "config": {"size": args.size},
        "training_command": "napari-xrd train beam-center " + " ".join(shlex.quote(a) for a in sys.argv[3:])
        if sys.argv[1:3] == ["train", "beam-center"]
        else f"napari-xrd train beam-center --name {args.name} --n-train {args.n_train} --n-val {args.n_val} "
        f"--epochs {args.epochs} --batch-size {args.batch_size} --size {args.size} --render-size {args.render_size} "
        f"--max-offset-mm {args.max_offset_mm} --lr {args.lr} --seed {args.seed}"
        + (f" --time-limit {args.time_limit}" if args.time_limit else ""),
        "data": f"synthetic frames from napari_xrd.core.training.beam_center.random_scene/render_frame at "
        f"{args.render_size}x{args.render_size} "
        "(Pilatus 6M, EIGER 16M, ADSC Q4 layouts; water/ice/flat/spot-only backgrounds; beamstop, gaps, dead pixels; "
        "true centre within ±max_offset_mm of a header centre near the middle; pitch/yaw uniform ±3°), block-averaged to the "
        "input size; validation frames from seed+1000003",
        "seed": args.seed,
        "metrics": metrics,
        "inputs": "model_input(frame, pixel_mask, size): log1p of block means / 99.5th percentile",
        "outputs": "mean and log-variance of [(fast/n_fast-0.5)*20, (slow/n_slow-0.5)*20, pitch/3°, yaw/3°]",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base": None,
    }
    out = Path(args.out) if args.out else user_model_dir()
    saved = save_model(model, card, out)
    print(json.dumps({"saved": str(saved.path), "metrics": metrics}, indent=2))
    return 0
