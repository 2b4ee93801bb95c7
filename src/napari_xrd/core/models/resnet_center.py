"""A small ResNet that regresses beam centre and detector pitch/yaw.

The seed-002 idea, made to generalise: the input is the whole frame block-
averaged to ``size × size`` and log-scaled, plus two coordinate channels
(CoordConv) so that the network can say *where* the symmetry centre is; the
head keeps the spatial layout (no global pooling) and predicts, for each of
its four targets, a mean and a log-variance (trained with a Gaussian negative
log-likelihood), so every prediction comes with an uncertainty.

Targets (see :func:`encode_targets`): beam centre as ``(fast / n_fast - 0.5)
* 20`` and ``(slow / n_slow - 0.5) * 20`` and pitch, yaw in units of 3°.
It is only the coarse start: :mod:`napari_xrd.core.beam_center` refines it.
"""

from __future__ import annotations

import numpy as np

from napari_xrd.core.models.weights import register_architecture

__all__ = ["build_resnet_center", "encode_targets", "decode_outputs", "CENTER_SCALE", "TILT_SCALE"]

CENTER_SCALE = 20.0
TILT_SCALE = 3.0


def encode_targets(beam_center, shape, pitch, yaw) -> np.ndarray:
    """``[u, v, p, y]`` network targets from a centre ``(fast, slow)`` px, image shape and tilt (deg)."""
    n_slow, n_fast = shape
    return np.array(
        [
            (beam_center[0] / n_fast - 0.5) * CENTER_SCALE,
            (beam_center[1] / n_slow - 0.5) * CENTER_SCALE,
            pitch / TILT_SCALE,
            yaw / TILT_SCALE,
        ],
        dtype=np.float32,
    )


def decode_outputs(out: np.ndarray, shape) -> dict:
    """Network output ``[mu(4), log_var(4)]`` -> centre (px), tilt (deg) and their 1-σ."""
    n_slow, n_fast = shape
    mu, lv = np.asarray(out[:4], float), np.asarray(out[4:8], float)
    sd = np.exp(0.5 * lv)
    return {
        "beam_center_px": (
            float((mu[0] / CENTER_SCALE + 0.5) * n_fast),
            float((mu[1] / CENTER_SCALE + 0.5) * n_slow),
        ),
        "center_sigma_px": float(max(sd[0] * n_fast, sd[1] * n_slow) / CENTER_SCALE),
        "pitch_deg": float(mu[2] * TILT_SCALE),
        "yaw_deg": float(mu[3] * TILT_SCALE),
        "tilt_sigma_deg": float(max(sd[2], sd[3]) * TILT_SCALE),
    }


@register_architecture("resnet_center")
def build_resnet_center(size: int = 128, widths=(16, 32, 48, 64, 96), hidden: int = 64):
    """Build the network (torch imported here, not at module import)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return torch.relu(y + self.skip(x))

    class ResNetCenter(nn.Module):
        def __init__(self):
            super().__init__()
            self.size = size
            self.stem = nn.Sequential(
                nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
            )
            layers = []
            cin = widths[0]
            for w in widths[1:]:
                layers.append(Block(cin, w, 2))
                cin = w
            self.body = nn.Sequential(*layers)
            feat = size // 2 ** (len(widths) - 1)
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(cin * feat * feat, hidden), nn.ReLU(), nn.Linear(hidden, 8)
            )
            g = torch.linspace(-1, 1, size)
            self.register_buffer("coords", torch.stack(torch.meshgrid(g, g, indexing="ij"))[None], persistent=False)

        def forward(self, x):
            # x: (batch, 1, size, size)
            x = torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1)], 1)
            out = self.head(self.body(self.stem(x)))
            mu, lv = out[:, :4], out[:, 4:].clamp(-12, 6)
            return torch.cat([mu, lv], 1)

    return ResNetCenter()
