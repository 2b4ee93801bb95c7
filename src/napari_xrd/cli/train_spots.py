"""``napari-xrd train spots``: train the Bragg-spot U-Net on a simulated dataset."""

from __future__ import annotations

import sys

from napari_xrd.cli._finetune import add_finetune_arguments, run_finetune


def add_parser(sub) -> None:
    p = sub.add_parser(
        "spots",
        help="train the spot-segmentation U-Net (distance-weighted loss)",
        description="Train the attention U-Net that segments Bragg spots, on napari-xrd datasets "
        "(`napari-xrd simulate`). Writes a checkpoint after every epoch (resume with --resume) and, "
        "at the end, the best model with its model card.",
    )
    p.add_argument("--data", nargs="+", metavar="DATA",
                   help="dataset directories for training (with --from-corrections: simulated data mixed in)")
    p.add_argument("--val-data", nargs="+", metavar="DATA",
                   help="held-out dataset directories (default: the last 10%% of --data, at least 1 example)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--resume", metavar="CKPT", help="checkpoint.pt to continue from")
    p.add_argument("--out", default="spots-training", metavar="DIR",
                   help="checkpoints, history.json and the final model go here (default ./spots-training)")
    p.add_argument("--save-to", metavar="DIR", help="write the final model (NAME.pt + NAME.json) here instead of --out")
    p.add_argument("--name", default="spots-unet", help="model name (default spots-unet)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crops-per-frame", type=int, default=24)
    p.add_argument("--crop", type=int, default=128, help="network crop (default 128)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 regularisation (default 1e-4)")
    p.add_argument("--channels", default="16,32,64,96", help="U-Net channels per level (default 16,32,64,96)")
    p.add_argument("--max-frames", type=int, default=None, help="use at most this many training frames")
    p.add_argument("--data-note", default="", help="free text for the model card (e.g. the simulate commands)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--select", choices=["last", "best"], default="last",
                   help="ship the last epoch's weights (default) or the epoch with the best validation F1 on crops")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="stop after S seconds of training (the learning-rate schedule follows time then)")
    p.add_argument("--init", metavar="MODEL",
                   help="start from the weights of this spots model (name, card path or 'default'; same "
                        "architecture) instead of a random initialisation; recorded as the card's base")
    p.add_argument("--input-normalisation", choices=["local", "tile"], default="local",
                   help="how each tile is normalised (default local: block-median background, noise from "
                        "neighbouring pixels; tile: the first model's tile median and MAD)")
    p.add_argument("--label-ice-grains", action="store_true",
                   help="train ice grains on frames labelled ice_ring as background (default: the loss ignores "
                        "them; find_spots' ice_rings option handles them by resolution)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_finetune_arguments(p)
    p.set_defaults(func=run)


def command_line(args) -> str:
    """The full command (every option spelled out) that reproduces this run."""
    import shlex

    parts = ["napari-xrd", "train", "spots", "--data", *args.data]
    if args.val_data:
        parts += ["--val-data", *args.val_data]
    for opt in ("epochs", "device", "out", "save_to", "name", "batch_size", "crops_per_frame", "crop", "lr",
                "weight_decay", "channels", "max_frames", "seed", "time_limit", "select", "resume", "init",
                "input_normalisation"):
        v = getattr(args, opt)
        if v is not None:
            parts += ["--" + opt.replace("_", "-"), str(v)]
    if getattr(args, "label_ice_grains", False):
        parts.append("--label-ice-grains")
    return " ".join(shlex.quote(p) for p in parts)


def _frames(datasets, indices, *, ignore_ice_grains: bool = True):
    """``(image, pixel_mask, spot_mask, ignore)`` of each example with a spot mask.

    ``ignore`` marks the ice grains of frames labelled ``ice_ring`` (see
    :func:`~napari_xrd.core.training.spots.ice_grain_ignore_mask`), else None.
    """
    from napari_xrd.core.simulate.anomalies import ANOMALY_CLASSES
    from napari_xrd.core.training.spots import ice_grain_ignore_mask

    k_ice = ANOMALY_CLASSES.index("ice_ring")
    for ds, i in indices:
        ex = datasets[ds].get(i, fields=("image", "pixel_mask", "spot_mask"))
        if ex.get("spot_mask") is None:
            continue
        ignore = None
        if ignore_ice_grains and ex["anomaly_labels"][k_ice] == 1 and ex["geometry"] is not None:
            ignore = ice_grain_ignore_mask(ex["image"], ex["geometry"], pixel_mask=ex.get("pixel_mask"),
                                           spot_mask=ex["spot_mask"])
        yield ex["image"], ex.get("pixel_mask"), ex["spot_mask"], ignore


def run(args) -> int:
    import datetime
    import json

    from napari_xrd.core.dataset import open_dataset
    from napari_xrd.core.models.weights import save_model
    from napari_xrd.core.progress import tqdm_progress
    from napari_xrd.core.spots.inference import DEFAULT_MARGIN, DEFAULT_TILE
    from napari_xrd.core.training.spots import SpotTrainingConfig, train_spot_model

    if args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    if args.from_corrections:
        return run_finetune(args, "spots", simulated=args.data)
    if not args.data:
        raise ValueError("--data is required (or --from-corrections)")
    channels = [int(c) for c in args.channels.split(",")]
    cfg = SpotTrainingConfig(
        model={"channels": channels, "full_res_convs": 2, "stem": 2},
        crop=args.crop,
        crops_per_frame=args.crops_per_frame,
        batch_size=args.batch_size,
        epochs=args.epochs,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        input_normalisation=args.input_normalisation,
    )
    train_sets = [open_dataset(p) for p in args.data]
    train_idx = [(k, i) for k, ds in enumerate(train_sets) for i in range(len(ds))]
    if args.val_data:
        val_sets = [open_dataset(p) for p in args.val_data]
        val_idx = [(k, i) for k, ds in enumerate(val_sets) for i in range(len(ds))]
    else:
        n_val = max(1, len(train_idx) // 10)
        if len(train_idx) < 2:
            raise ValueError("need at least 2 examples to hold one out (or give --val-data)")
        val_sets, val_idx, train_idx = train_sets, train_idx[-n_val:], train_idx[:-n_val]
    if args.max_frames:
        train_idx = train_idx[: args.max_frames]
    initial_state, base = None, None
    if args.init:
        from napari_xrd.core.models.weights import load_model

        init_net, init_card = load_model(args.init, task="spots", device="cpu")
        if dict(init_card.card.get("config", {})) != dict(cfg.model):
            raise ValueError(f"--init {args.init}: its architecture {init_card.card.get('config')} differs from "
                             f"this run's {cfg.model} (set --channels to match)")
        initial_state = init_net.state_dict()
        base = {"name": init_card.name, "sha256": init_card.card.get("sha256")}
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    with tqdm_progress("train spots", disable=args.quiet or None) as bar:
        model, history = train_spot_model(
            _frames(train_sets, train_idx, ignore_ice_grains=not args.label_ice_grains),
            _frames(val_sets, val_idx, ignore_ice_grains=not args.label_ice_grains),
            config=cfg,
            device=args.device,
            out_dir=args.out,
            resume=args.resume,
            progress=bar,
            log=log,
            time_limit=args.time_limit,
            select=args.select,
            initial_state=initial_state,
        )
    if args.select == "best":
        best = max(history, key=lambda h: h.get("f1", 0)) if history else {}
    else:
        best = history[-1] if history else {}
    card = {
        "name": args.name,
        "task": "spots",
        "architecture": "attention_unet",
        "config": dict(cfg.model),
        "inference": {"tile": DEFAULT_TILE, "margin": DEFAULT_MARGIN, "threshold": 0.5, "input": cfg.input_normalisation},
        "training_command": command_line(args),
        "training_config": {k: v for k, v in cfg.__dict__.items()},
        "data": {"train": list(args.data), "val": list(args.val_data or ["last 10% of train"]),
                 "n_train_frames": len(train_idx), "n_val_frames": len(val_idx), "note": args.data_note},
        "seed": args.seed,
        "metrics": {"held_out_crops": {k: best.get(k) for k in ("epoch", "iou", "recall", "precision", "f1")}},
        "history": history,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "base": base,
    }
    saved = save_model(model, card, args.save_to or args.out)
    print(json.dumps({"model": str(saved.weights_path), "card": str(saved.path), **card["metrics"]}))
    return 0
