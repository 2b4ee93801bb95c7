"""Fine-tuning the spot U-Net on corrections (plugs into :mod:`.finetune`).

Held-out corrections are scored the way the model is used: full-frame tiled
inference, then spot-level recall, precision and F1 (a predicted spot is
right within 3 px of a corrected one) and the pixel IoU of the masks.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from napari_xrd.core.training.finetune import FinetuneTask, register_task

__all__ = ["evaluate_on_examples", "train_on_examples", "shifted_domain_stills"]


def _has_target(example) -> bool:
    return example.spot_mask is not None


def evaluate_on_examples(model, examples, *, device="auto", seed=0, threshold: float = 0.5) -> dict:
    """Spot recall/precision/F1 (pooled over frames), mask IoU and the mean per-frame F1 of ``model``."""
    from napari_xrd.core.spots.inference import predict_spot_probability
    from napari_xrd.core.spots.metrics import centroids_from_mask, match_spots

    net = copy.deepcopy(model).eval()  # inference caches a folded copy per module object
    inter = union = hits_t = n_t = hits_p = n_p = 0
    per_frame = []
    for ex in examples:
        valid = np.ones(ex.image.shape, bool) if ex.pixel_mask is None else ex.pixel_mask == 0
        prob = predict_spot_probability(ex.image, pixel_mask=ex.pixel_mask, model=net, device=device)
        pred = (prob > threshold) & valid
        true = np.asarray(ex.spot_mask, bool) & valid
        inter += np.count_nonzero(pred & true)
        union += np.count_nonzero(pred | true)
        ph, th = match_spots(centroids_from_mask(pred), centroids_from_mask(true), radius=3.0)
        hits_p += int(np.sum(ph))
        n_p += len(ph)
        hits_t += int(np.sum(th))
        n_t += len(th)
        r_i = np.mean(th) if len(th) else np.nan
        p_i = np.mean(ph) if len(ph) else np.nan
        per_frame.append(2 * r_i * p_i / (r_i + p_i) if len(th) and len(ph) and r_i + p_i > 0 else 0.0)
    recall = hits_t / n_t if n_t else float("nan")
    precision = hits_p / n_p if n_p else float("nan")
    f1 = 2 * recall * precision / (recall + precision) if n_t and n_p and (recall + precision) > 0 else 0.0
    return {
        "f1": f1,
        "recall": recall,
        "precision": precision,
        "iou": inter / union if union else 1.0,
        "f1_frame_mean": float(np.mean(per_frame)) if per_frame else float("nan"),
    }


def train_on_examples(model, card, train_examples, simulated_examples, *, epochs, seed, device, progress=None, cancel=None,
                      learning_rate: float = 5e-4, simulated_per_correction: float = 1.0, min_steps: int = 120):
    """Continue training ``model`` on corrections mixed with simulated frames.

    Corrections are the point, so they are all used; simulated frames (at
    most ``simulated_per_correction`` per correction, drawn reproducibly)
    keep the model from forgetting the general case.  The learning rate is
    lower than for training from scratch, and at least ``min_steps``
    optimiser steps are run however few the corrections.
    """
    from napari_xrd.core.training.spots import SpotTrainingConfig, train_spot_model

    rng = np.random.default_rng(seed)
    n_sim = min(len(simulated_examples), int(round(simulated_per_correction * len(train_examples))))
    sims = [simulated_examples[i] for i in rng.choice(len(simulated_examples), n_sim, replace=False)] if n_sim else []
    frames = [(ex.image, ex.pixel_mask, ex.spot_mask) for ex in list(train_examples) + sims]
    cfg = SpotTrainingConfig(model=dict(card.card["config"]), learning_rate=learning_rate, seed=seed,
                             input_normalisation=card.card.get("inference", {}).get("input", "tile"))
    # a handful of corrected frames gives only a few batches per epoch: run at
    # least ``min_steps`` optimiser steps so that small stores still adapt
    steps_per_epoch = max(1, math.ceil(len(frames) * cfg.crops_per_frame / cfg.batch_size))
    cfg.epochs = max(int(epochs), math.ceil(min_steps / steps_per_epoch))
    trained, _history = train_spot_model(
        frames, [], config=cfg, device=device, initial_state=model.state_dict(), progress=progress, cancel=cancel
    )
    return trained


register_task(
    FinetuneTask(
        name="spots",
        metric="f1",
        has_target=_has_target,
        evaluate=evaluate_on_examples,
        train=train_on_examples,
    )
)


def shifted_domain_stills(n: int, seed0: int) -> list:
    """Stills from a domain the shipped spot model never saw, for measuring fine-tuning.

    A gapless 512 × 512 pixel detector of 0.172 mm, strong background,
    100-250 mm; seeds ``seed0, seed0 + 1, ...``.  Frames with fewer than 40
    spot pixels (nothing to find) or with spots over 5 % of the detector (a
    huge random cell at short distance, not what a beamline records) are
    skipped.

    Returns
    -------
    list of SimulatedStill
    """
    from napari_xrd.core.detectors import DetectorModel
    from napari_xrd.core.simulate import random_still

    det = DetectorModel("pad512", 512, 512, 0.172, 512, 512, 0, 0)
    out, i = [], 0
    while len(out) < n:
        s = random_still(seed0 + i, detector=det, shape=None, anomalies=["strong_background"], style="realistic",
                         distance_range_mm=(100.0, 250.0))
        i += 1
        if 40 <= s.spot_mask.sum() <= 0.05 * s.spot_mask.size:
            out.append(s)
    return out
