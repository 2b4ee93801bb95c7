"""Training the spot U-Net with the distance-weighted loss (seed 000).

Loss
    ``L = BCE_w + dice_weight · (1 - Dice)``.  The binary cross-entropy is
    weighted per pixel by :func:`~napari_xrd.core.spots.distance_map.boundary_weight_map`:
    a Gaussian in the local taxicab distance to the spot boundary, so that
    errors on and next to spot edges (the shape of each spot, and the pixels
    between close spots) cost most, while the far background (99.5 % of the
    pixels) does not swamp the spots.  Masked pixels have weight 0.  The soft
    Dice term is computed over the valid pixels of each crop.
Regularisation
    BatchNorm in every block and L2 via the optimiser's weight decay (Adam
    with ``weight_decay``: a true L2 penalty on the weights).
Data
    Frames ``(image, pixel_mask, spot_mask)``; training uses square crops
    (half of them centred near a true spot, half anywhere, so that rings,
    gaps and beamstop shadows are seen as background), augmented with flips,
    90° turns and a random detector gain, pedestal and read noise, so that
    the model does not learn one simulator's photon statistics.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from napari_xrd.core.progress import check_cancel, report

__all__ = [
    "SpotTrainingConfig",
    "distance_weighted_loss",
    "sample_crops",
    "augment_crop",
    "ice_grain_ignore_mask",
    "train_spot_model",
    "evaluate_spot_model",
]


@dataclass
class SpotTrainingConfig:
    """Everything that defines a training run (stored in checkpoints and the model card)."""

    model: dict = field(default_factory=lambda: {"channels": [16, 32, 64, 96], "full_res_convs": 2, "stem": 2})
    crop: int = 128
    context: int = 256
    crops_per_frame: int = 24
    spot_crop_fraction: float = 0.5
    batch_size: int = 8
    epochs: int = 10
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_distance: int = 8
    boundary_sigma: float = 2.0
    boundary_weight: float = 5.0
    dice_weight: float = 1.0
    augment: bool = True
    seed: int = 0
    input_normalisation: str = "local"  # prepare_input(normalisation=...); recorded in the card's inference.input


def distance_weighted_loss(logits, target, weights, valid, *, dice_weight: float = 1.0):
    """Boundary-weighted BCE plus soft Dice.

    Parameters
    ----------
    logits, target, weights, valid : torch.Tensor, shape (B, 1, H, W)
        Network output, 0/1 spot mask, boundary weights and 0/1 valid pixels.

    Returns
    -------
    loss : torch.Tensor (scalar)
    """
    import torch
    import torch.nn.functional as F

    w = weights * valid
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=w, reduction="sum") / w.sum().clamp_min(1.0)
    p = torch.sigmoid(logits) * valid
    t = target * valid
    inter = (p * t).sum(dim=(1, 2, 3))
    denom = p.sum(dim=(1, 2, 3)) + t.sum(dim=(1, 2, 3))
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return bce + dice_weight * (1.0 - dice.mean())


def ice_grain_ignore_mask(image, geometry, *, pixel_mask=None, spot_mask=None, shell_halfwidth: float = 0.012,
                          z_threshold: float = 3.0, grow: int = 2) -> np.ndarray:
    """Pixels of ice crystallites ("spotty ice") that the spot loss should ignore.

    A grain of ice on a powder line looks exactly like a Bragg spot in a
    256-pixel tile; only its resolution gives it away, which
    :func:`~napari_xrd.core.spots.ice.flag_ice_ring_spots` uses after
    detection.  Labelling grains as background teaches the network that
    bright compact spots are not spots (it then hollows out the cores of
    strong reflections), so the loss ignores them instead.  A grain pixel
    is one within ``shell_halfwidth`` of an ice line (in ``s = 1/d``)
    whose 3 × 3 mean is brighter than the line's azimuthal median by
    ``z_threshold`` robust standard deviations (Anscombe scale: a grain
    covers several pixels, a noise spike one); the set is grown by ``grow``
    pixels; true spots and their tails are never ignored.  A smooth ice ring,
    noise and all, stays background.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        Counts.
    geometry : DetectorGeometry
        The frame's geometry (for the resolution of every pixel).
    pixel_mask : (n_slow, n_fast) array_like, optional
        0 = good pixel.
    spot_mask : (n_slow, n_fast) bool array_like, optional
        True Bragg-spot pixels (kept).
    shell_halfwidth : float
        Half-width of each ice shell, Å⁻¹ in ``1/d``.
    z_threshold : float
    grow : int
        Pixels.

    Returns
    -------
    ignore : (n_slow, n_fast) bool ndarray
    """
    from scipy import ndimage as ndi

    from napari_xrd.core.spots.ice import ICE_RING_D

    img = np.asarray(image, dtype=np.float32)
    valid = np.isfinite(img)
    if pixel_mask is not None:
        valid &= np.asarray(pixel_mask) == 0
    s = (1.0 / geometry.d_spacing_map()).astype(np.float32)
    to_line = np.full(s.shape, np.inf, dtype=np.float32)  # distance in s to the nearest ice line
    for d in ICE_RING_D:
        np.minimum(to_line, np.abs(s - np.float32(1.0 / d)), out=to_line)
    on_shell = (to_line < shell_halfwidth) & valid
    bright = np.zeros(img.shape, bool)
    if on_shell.any():
        # Anscombe counts averaged over 3 x 3 valid pixels: a grain (several pixels) stands out, a noise pixel does not
        a = np.where(valid, 2.0 * np.sqrt(np.clip(np.nan_to_num(img), 0, None) + 0.375), 0.0).astype(np.float32)
        n = ndi.uniform_filter(valid.astype(np.float32), 3)
        box = (ndi.uniform_filter(a, 3) / np.maximum(n, 1e-6))[on_shell]
        bins = np.round(s[on_shell] / 5e-4).astype(np.int64)  # thin shells: the ring profile is flat in each
        _, inv = np.unique(bins, return_inverse=True)
        counts = np.bincount(inv)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        med = box[np.lexsort((box, inv))][starts + counts // 2]
        dev = np.abs(box - med[inv])
        scale = np.maximum(1.4826 * dev[np.lexsort((dev, inv))][starts + counts // 2], 1.0 / 3.0)
        bright[on_shell] = box > med[inv] + z_threshold * scale[inv]
    if spot_mask is not None:  # a Bragg spot's tails are its boundary, which the loss is there to learn
        spots = np.asarray(spot_mask, bool)
        bright &= ~ndi.binary_dilation(spots, iterations=grow + 2)
    ignore = ndi.binary_dilation(bright, iterations=grow) if grow else bright
    ignore &= on_shell
    if spot_mask is not None:
        ignore &= ~spots
    return ignore


def sample_crops(image, pixel_mask, spot_mask, *, crop: int, n: int, spot_fraction: float, rng, ignore=None) -> list[tuple]:
    """Square crops ``(image, valid, spot_mask, ignore)`` from one frame.

    ``ignore`` (optional, bool) marks valid pixels the loss leaves out
    (see :func:`ice_grain_ignore_mask`).  Frames smaller than ``crop`` are
    padded with invalid pixels.
    """
    image = np.asarray(image, dtype=np.float32)
    valid = np.ones(image.shape, bool) if pixel_mask is None else np.asarray(pixel_mask) == 0
    valid &= np.isfinite(image)
    spots = np.asarray(spot_mask, bool)
    ignore = np.zeros(image.shape, bool) if ignore is None else np.asarray(ignore, bool)
    ny, nx = image.shape
    py, px = max(crop - ny, 0), max(crop - nx, 0)
    if py or px:
        image = np.pad(image, ((0, py), (0, px)))
        valid = np.pad(valid, ((0, py), (0, px)))
        spots = np.pad(spots, ((0, py), (0, px)))
        ignore = np.pad(ignore, ((0, py), (0, px)))
        ny, nx = image.shape
    spot_pixels = np.argwhere(spots & valid)
    out = []
    for _ in range(n):
        if len(spot_pixels) and rng.random() < spot_fraction:
            cy, cx = spot_pixels[rng.integers(len(spot_pixels))]
            y0 = int(np.clip(cy - rng.integers(crop // 8, crop - crop // 8), 0, ny - crop))
            x0 = int(np.clip(cx - rng.integers(crop // 8, crop - crop // 8), 0, nx - crop))
        else:
            y0 = int(rng.integers(0, ny - crop + 1))
            x0 = int(rng.integers(0, nx - crop + 1))
        sl = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        out.append((image[sl].copy(), valid[sl].copy(), spots[sl].copy(), ignore[sl].copy()))
    return out


def augment_crop(image, valid, spots, rng, ignore=None):
    """Flips, 90° turns and a random detector response (gain, pedestal, read noise).

    Returns ``(image, valid, spots)``, or ``(image, valid, spots, ignore)``
    when ``ignore`` is given (turned and flipped with the rest).
    """
    arrays = (image, valid, spots) if ignore is None else (image, valid, spots, ignore)
    k = int(rng.integers(4))
    arrays = [np.rot90(a, k) for a in arrays]
    if rng.random() < 0.5:
        arrays = [a[:, ::-1] for a in arrays]
    image, valid, spots = arrays[:3]
    image = np.ascontiguousarray(image, dtype=np.float32)
    if rng.random() < 0.4:  # integrating (CCD-like) detector: gain, offset, read noise
        gain = float(rng.uniform(0.5, 4.0))
        pedestal = float(rng.choice([0.0, rng.uniform(5, 100)]))
        read = float(rng.uniform(0.0, 3.0))
        image = image * gain + pedestal + rng.normal(0.0, read, image.shape).astype(np.float32)
    out = (image, np.ascontiguousarray(valid), np.ascontiguousarray(spots))
    return out if ignore is None else out + (np.ascontiguousarray(arrays[3]),)


def _make_batch(crops, cfg: SpotTrainingConfig, rng, augment: bool):
    import torch

    from napari_xrd.core.spots.distance_map import boundary_weight_map
    from napari_xrd.core.spots.inference import prepare_input

    xs, ts, ws, vs = [], [], [], []
    c = cfg.crop
    for image, valid, spots, ignore in crops:
        if augment:
            image, valid, spots, ignore = augment_crop(image, valid, spots, rng, ignore)
        # normalise over the full context (the inference tile size), train on a part
        x = prepare_input(image, valid, normalisation=cfg.input_normalisation)
        y0 = int(rng.integers(0, image.shape[0] - c + 1))
        x0 = int(rng.integers(0, image.shape[1] - c + 1))
        sl = (slice(y0, y0 + c), slice(x0, x0 + c))
        x, valid, spots, ignore = x[(slice(None),) + sl], valid[sl], spots[sl], ignore[sl]
        xs.append(np.ascontiguousarray(x))
        ts.append(spots & valid)
        ws.append(
            boundary_weight_map(
                spots & valid, max_distance=cfg.max_distance, sigma=cfg.boundary_sigma, w0=cfg.boundary_weight
            )
        )
        vs.append(valid & ~ignore)  # the loss's pixels: ice grains are neither spot nor background
    f = lambda a: torch.from_numpy(np.stack(a).astype(np.float32)[:, None])  # noqa: E731
    return torch.from_numpy(np.stack(xs)), f(ts), f(ws), f(vs)


def evaluate_spot_model(model, crops, *, device, batch_size: int = 8, threshold: float = 0.5) -> dict:
    """Pixel IoU and spot recall/precision/F1 (3 px matching) on held-out crops."""
    import torch

    from napari_xrd.core.spots.dispersion import label_spots
    from napari_xrd.core.spots.inference import prepare_input
    from napari_xrd.core.spots.metrics import centroids_from_mask, match_spots

    model.eval()
    normalisation = getattr(model, "inference_options", {}).get("input", "tile")
    inter = union = 0
    hits_t = n_t = hits_p = n_p = 0
    with torch.inference_mode():
        for b0 in range(0, len(crops), batch_size):
            chunk = crops[b0 : b0 + batch_size]
            x = torch.from_numpy(np.stack([prepare_input(im, v, normalisation=normalisation) for im, v, *_ in chunk])).to(device)
            prob = torch.sigmoid(model(x).float())[:, 0].cpu().numpy()
            for (im, v, s, *_), p in zip(chunk, prob):
                pred = (p > threshold) & v
                # the same clean-up as find_spots(method="unet"): blobs of one pixel are dropped
                pred = label_spots(pred, min_spot_size=2, max_spot_size=np.iinfo(np.int32).max) > 0
                true = s & v
                inter += np.count_nonzero(pred & true)
                union += np.count_nonzero(pred | true)
                ph, th = match_spots(centroids_from_mask(pred), centroids_from_mask(true), radius=3.0)
                hits_p += int(ph.sum())
                n_p += ph.size
                hits_t += int(th.sum())
                n_t += th.size
    recall = hits_t / n_t if n_t else float("nan")
    precision = hits_p / n_p if n_p else float("nan")
    f1 = 2 * recall * precision / (recall + precision) if n_t and n_p and recall + precision > 0 else 0.0
    return {"iou": inter / union if union else 1.0, "recall": recall, "precision": precision, "f1": f1}


def train_spot_model(
    train_frames,
    val_frames,
    *,
    config: SpotTrainingConfig | None = None,
    device="auto",
    out_dir=None,
    resume=None,
    progress=None,
    cancel=None,
    log=None,
    time_limit: float | None = None,
    initial_state: dict | None = None,
    select: str = "last",
):
    """Train the attention U-Net on frames ``(image, pixel_mask, spot_mask)``.

    Parameters
    ----------
    train_frames, val_frames : iterable of (image, pixel_mask, spot_mask[, ignore])
        ``(n_slow, n_fast)`` arrays; ``pixel_mask`` and ``ignore`` may be
        None.  ``ignore`` marks pixels the loss leaves out (ice grains: see
        :func:`ice_grain_ignore_mask`).  Crops are drawn once per frame
        (``config.crops_per_frame``), so the frames need not stay in memory.
    config : SpotTrainingConfig
    device : str
    out_dir : path, optional
        Where ``checkpoint.pt`` (after every epoch) and ``history.json`` go.
    resume : path, optional
        A checkpoint to continue from (model, optimiser, epoch, history, RNG).
    progress, cancel : callables, optional
        Progress counts optimiser steps over all epochs.
    log : callable, optional
        ``log(str)`` for one line per epoch.
    time_limit : float, optional
        Seconds of training (this call).  The learning-rate schedule then
        follows the larger of the step fraction and the time fraction, and
        training stops (after a validation and a checkpoint) when either
        reaches 1, so a run on a busy machine still anneals properly.
    initial_state : dict, optional
        A ``state_dict`` to start from (fine-tuning a trained model) instead
        of a random initialisation.
    select : {"last", "best"}
        Return the weights after the last epoch (the end of the annealed
        schedule) or those of the epoch with the best validation F1 on crops.

    Returns
    -------
    model : torch.nn.Module
        The weights chosen by ``select``.
    history : list of dict
        Per-epoch loss and validation metrics.
    """
    import torch

    from napari_xrd.core.device import flush_denormals, select_device
    from napari_xrd.core.models.attention_unet import build_attention_unet

    cfg = config or SpotTrainingConfig()
    if select not in ("last", "best"):
        raise ValueError(f"select must be 'last' or 'best', got {select!r}")
    dev = select_device(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    def crops_of(frames, n):
        out = []
        for image, pixel_mask, spot_mask, *rest in frames:
            out += sample_crops(
                image, pixel_mask, spot_mask, crop=cfg.context, n=n, spot_fraction=cfg.spot_crop_fraction, rng=rng,
                ignore=rest[0] if rest else None,
            )
        return out

    train = crops_of(train_frames, cfg.crops_per_frame)
    val = crops_of(val_frames, max(cfg.crops_per_frame // 2, 1))
    if not train:
        raise ValueError("no training frames")
    model = build_attention_unet(**cfg.model)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    model.inference_options = {"input": cfg.input_normalisation}
    model = model.to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warm = max(1, total // 20)

    t_start = time.time()

    def fraction(i):
        f = i / total
        if time_limit:
            f = max(f, (time.time() - t_start) / time_limit)
        return min(f, 1.0)

    def lr_factor(i):  # linear warm-up, then cosine decay over the run
        return min(1.0, (i + 1) / warm) * 0.5 * (1.0 + math.cos(math.pi * fraction(i)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    history, start_epoch, best = [], 0, None
    if resume is not None:
        ck = torch.load(resume, map_location="cpu", weights_only=False)
        if ck.get("config", {}).get("model") != cfg.model:
            raise ValueError(f"{resume}: checkpoint is for model {ck.get('config', {}).get('model')}, not {cfg.model}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, history = ck["epoch"], ck["history"]
        best = ck.get("best")
        rng = np.random.default_rng(ck.get("rng_seed", cfg.seed + start_epoch))
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    with flush_denormals():  # decayed weights turn subnormal: slow CPU arithmetic late in a run
        step = start_epoch * steps_per_epoch
        out_of_time = False
        for epoch in range(start_epoch, cfg.epochs):
            if out_of_time:
                break
            model.train()
            t0 = time.time()
            order = rng.permutation(len(train))
            losses = []
            for b0 in range(0, len(order), cfg.batch_size):
                check_cancel(cancel)
                batch = [train[i] for i in order[b0 : b0 + cfg.batch_size]]
                x, t, w, v = (a.to(dev) for a in _make_batch(batch, cfg, rng, cfg.augment))
                x = x.contiguous(memory_format=torch.channels_last)
                loss = distance_weighted_loss(model(x), t, w, v, dice_weight=cfg.dice_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                step += 1
                report(progress, step, total, f"epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses[-20:]):.4f}")
                if time_limit and time.time() - t_start > time_limit:
                    out_of_time = True
                    break
            metrics = evaluate_spot_model(model, val, device=dev) if val else {}
            entry = {"epoch": epoch + 1, "steps": len(losses), "loss": float(np.mean(losses)),
                     "seconds": round(time.time() - t0, 1), **metrics}
            history.append(entry)
            if best is None or metrics.get("f1", 0) >= best["f1"]:
                best = {"f1": metrics.get("f1", 0), "epoch": epoch + 1, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            if log is not None:
                log(json.dumps(entry))
            if out is not None:
                ck = {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "best": best,
                    "config": asdict(cfg),
                    "rng_seed": int(rng.integers(2**31)),
                }
                torch.save(ck, out / "checkpoint.tmp")
                (out / "checkpoint.tmp").replace(out / "checkpoint.pt")
                (out / "history.json").write_text(json.dumps(history, indent=1))
    if select == "best" and best is not None:
        model.load_state_dict(best["state"])
    model.eval()
    return model, history
