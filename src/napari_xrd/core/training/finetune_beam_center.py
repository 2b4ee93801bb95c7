"""Fine-tuning the beam-centre ResNet on corrections (plugs into :mod:`.finetune`).

The ResNet is the coarse start of :func:`napari_xrd.core.beam_center.estimate_beam_center`;
corrected beam centres (dragged in napari) teach it a beamline's typical
images.  Held-out corrections are scored by the ResNet's own centre error
in pixels (the precise estimator then refines from there).
"""

from __future__ import annotations

import copy

import numpy as np

from napari_xrd.core.progress import check_cancel, report
from napari_xrd.core.training.finetune import FinetuneTask, register_task

__all__ = ["evaluate_on_examples", "train_on_examples"]


def _has_target(example) -> bool:
    return example.geometry is not None and tuple(example.geometry.shape) == tuple(example.image.shape)


def _inputs(examples, size):
    from napari_xrd.core.models.resnet_center import encode_targets
    from napari_xrd.core.training.beam_center import model_input

    x = np.stack([model_input(ex.image, pixel_mask=ex.pixel_mask, size=size)[None] for ex in examples])
    y = np.stack(
        [encode_targets(ex.geometry.beam_center, ex.image.shape, ex.geometry.pitch, ex.geometry.yaw) for ex in examples]
    )
    return x.astype(np.float32), y.astype(np.float32)


def evaluate_on_examples(model, examples, *, device="cpu", seed=0) -> dict:
    """Centre error (px) of the ResNet's estimate against the corrected centres.

    Returns ``neg_center_error_px`` (minus the median error: higher is
    better, the promotion score), ``center_error_px_median``,
    ``center_error_px_max`` and ``n``.
    """
    import torch

    from napari_xrd.core.models.resnet_center import decode_outputs

    net = copy.deepcopy(model).cpu().eval()
    size = int(getattr(net, "size", 128))
    x, _ = _inputs(examples, size)
    with torch.no_grad():
        out = net(torch.from_numpy(x)).numpy()
    errors = []
    for ex, o in zip(examples, out):
        est = decode_outputs(o, ex.image.shape)["beam_center_px"]
        errors.append(float(np.hypot(est[0] - ex.geometry.beam_center[0], est[1] - ex.geometry.beam_center[1])))
    med = float(np.median(errors)) if errors else float("nan")
    return {"neg_center_error_px": -med, "center_error_px_median": med,
            "center_error_px_max": float(np.max(errors)) if errors else float("nan"), "n": len(errors)}


def train_on_examples(model, card, train_examples, simulated_examples, *, epochs, seed, device, progress=None,
                      cancel=None, learning_rate: float = 3e-4, steps_per_epoch: int = 60, batch_size: int = 16,
                      synthetic_per_correction: int = 4):
    """Continue training on corrected centres, mixed with freshly rendered frames.

    Each batch holds corrections (flipped at random, which flips centre and
    tilt as in the original training) and rendered frames from the training
    renderer (``synthetic_per_correction`` per correction), so the model
    learns the beamline without forgetting the general case.
    """
    import torch

    from napari_xrd.core.training.beam_center import make_dataset, training_step

    size = int(getattr(model, "size", card.card.get("config", {}).get("size", 128)))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xc, yc = _inputs(list(train_examples) + list(simulated_examples), size)
    n_syn = synthetic_per_correction * len(xc)
    if n_syn:
        xs, ys, _ = make_dataset(n_syn, seed=seed + 77, size=size, render_size=2 * size, max_offset_mm=40.0)
        x_all, y_all = np.concatenate([xc, xs]), np.concatenate([yc, ys])
    else:
        x_all, y_all = xc, yc
    weights = np.concatenate([np.full(len(xc), 1.0 / max(len(xc), 1)), np.full(len(x_all) - len(xc), 1.0 / max(len(x_all) - len(xc), 1))])
    weights /= weights.sum()  # half of each batch from corrections, half rendered
    xt, yt = torch.from_numpy(x_all), torch.from_numpy(y_all)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    total = epochs * steps_per_epoch
    for step in range(total):
        check_cancel(cancel)
        idx = rng.choice(len(x_all), batch_size, p=weights)
        loss = training_step(model, opt, xt[idx], yt[idx], rng)
        if step % 10 == 0:
            report(progress, step, total, f"loss {loss.item():.3f}")
    model.eval()
    return model


register_task(
    FinetuneTask(
        name="beam-center",
        metric="neg_center_error_px",
        has_target=_has_target,
        evaluate=evaluate_on_examples,
        train=train_on_examples,
    )
)
