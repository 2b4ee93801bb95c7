"""Attention U-Net for Bragg-spot segmentation (seed 000).

A small U-Net whose encoder and decoder stages each end in a CBAM-style
attention block: channel attention (a squeeze-and-excitation MLP over the
average- and max-pooled channels) followed by spatial attention (a 7 × 7
convolution over the channel-wise mean and max).  Convolutions are followed
by BatchNorm and ReLU; L2 regularisation is the optimiser's weight decay
(see :mod:`napari_xrd.core.training.spots`).

The output is one logit per pixel (spot vs background).  Input channels are
prepared by :func:`napari_xrd.core.spots.inference.prepare_input`.

References
----------
Ronneberger, Fischer & Brox (2015), U-Net, MICCAI.
Woo, Park, Lee & Kweon (2018), CBAM: Convolutional Block Attention Module, ECCV.
"""

from __future__ import annotations

from napari_xrd.core.models.weights import register_architecture

__all__ = ["build_attention_unet", "fold_batchnorm"]


def _modules():
    import torch
    from torch import nn
    import torch.nn.functional as F

    class ChannelAttention(nn.Module):
        def __init__(self, channels: int, reduction: int = 4):
            super().__init__()
            hidden = max(channels // reduction, 2)
            self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

        def forward(self, x, pool_weight=None):
            if pool_weight is None:
                avg = F.adaptive_avg_pool2d(x, 1)
                mx = F.adaptive_max_pool2d(x, 1)
            else:  # statistics over the pixels that count; a tile with none falls back to all its pixels
                w = pool_weight.float()
                w = torch.where(w.sum(dim=(2, 3), keepdim=True) > 0, w, torch.ones_like(w))
                # sums in float32: under fp16 autocast a tile's sum can pass 65504
                avg = ((x.float() * w).sum(dim=(2, 3), keepdim=True) / w.sum(dim=(2, 3), keepdim=True)).to(x.dtype)
                mx = torch.where(w > 0, x, torch.full_like(x, -torch.inf)).amax(dim=(2, 3), keepdim=True)
            return x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))

    class SpatialAttention(nn.Module):
        def __init__(self, kernel_size: int = 7):
            super().__init__()
            self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

        def forward(self, x):
            s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
            return x * torch.sigmoid(self.conv(s))

    class Block(nn.Module):
        """(conv 3×3 → BN → ReLU) × n_convs, then channel and spatial attention."""

        def __init__(self, c_in: int, c_out: int, n_convs: int, attention: bool):
            super().__init__()
            layers = []
            for i in range(n_convs):
                layers += [
                    nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                ]
            self.convs = nn.Sequential(*layers)
            self.attention = nn.Sequential(ChannelAttention(c_out), SpatialAttention()) if attention else nn.Identity()

        def forward(self, x, pool_weight=None):
            x = self.convs(x)
            if isinstance(self.attention, nn.Identity):
                return x
            channel, spatial = self.attention
            return spatial(channel(x, pool_weight))

    class AttentionUNet(nn.Module):
        def __init__(self, in_channels=2, channels=(8, 16, 32, 64), full_res_convs=1, attention=True, stem=1):
            super().__init__()
            channels = tuple(int(c) for c in channels)
            self.depth = len(channels) - 1
            self.stem = int(stem)
            self.encoders = nn.ModuleList()
            c_prev = in_channels * self.stem**2
            for i, c in enumerate(channels):
                n = full_res_convs if i == 0 else 2
                # no attention at full resolution: it is the costly level
                self.encoders.append(Block(c_prev, c, n, attention and i > 0))
                c_prev = c
            self.ups = nn.ModuleList()
            self.decoders = nn.ModuleList()
            for i in range(self.depth - 1, -1, -1):
                self.ups.append(nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2))
                n = full_res_convs if i == 0 else 2
                self.decoders.append(Block(2 * channels[i], channels[i], n, attention and i > 0))
            self.head = nn.Conv2d(channels[0], self.stem**2, 1)

        @property
        def multiple(self) -> int:
            """Input sizes must be multiples of this."""
            return self.stem * 2**self.depth

        def forward(self, x, pool_weight=None):
            """Logits ``(B, 1, H, W)`` of ``x`` ``(B, C, H, W)``.

            ``pool_weight`` ``(B, 1, H, W)``, optional: 1 where a pixel counts
            in the channel attention's pooled statistics, 0 where it does
            not (regions whose content should not set the gain of the
            channels for the rest of the tile).  A lower-resolution pixel
            counts only if every pixel it covers counts.
            """
            weights = [None] * len(self.encoders)
            if pool_weight is not None:
                w = pool_weight.to(x.dtype)
                w = -F.max_pool2d(-w, self.stem) if self.stem > 1 else w
                weights = [w]
                for _ in range(self.depth):
                    weights.append(-F.max_pool2d(-weights[-1], 2))
            if self.stem > 1:
                x = F.pixel_unshuffle(x, self.stem)
            skips = []
            for i, enc in enumerate(self.encoders):
                if i > 0:
                    x = F.max_pool2d(x, 2)
                x = enc(x, weights[i])
                skips.append(x)
            skips.pop()
            for level, (up, dec) in zip(range(self.depth - 1, -1, -1), zip(self.ups, self.decoders)):
                x = up(x)
                x = dec(torch.cat([x, skips.pop()], dim=1), weights[level])
            x = self.head(x)
            return F.pixel_shuffle(x, self.stem) if self.stem > 1 else x

    return AttentionUNet


@register_architecture("attention_unet")
def build_attention_unet(
    *, in_channels: int = 2, channels=(8, 16, 32, 64), full_res_convs: int = 1, attention: bool = True, stem: int = 1
):
    """Build the spot U-Net.

    Parameters
    ----------
    in_channels : int
        2: the normalised image and the valid-pixel mask.
    channels : sequence of int
        Channels per level, full resolution first; ``len(channels) - 1``
        poolings, so tile sizes must be multiples of ``2**(len - 1)``.
    full_res_convs : int
        Convolutions at full resolution (the costly level) in the encoder and
        in the decoder.
    attention : bool
        Channel + spatial attention after each lower-resolution stage.
    stem : int
        Space-to-depth factor: ``stem × stem`` pixel blocks are folded into
        channels at the input and unfolded at the output (pixel shuffle), so
        the network runs at ``1/stem`` resolution while still predicting every
        pixel.  2 makes CPU inference about 3-4 × cheaper.

    Returns
    -------
    torch.nn.Module
        Maps ``(batch, in_channels, H, W)`` to logits ``(batch, 1, H, W)``.
    """
    return _modules()(
        in_channels=in_channels, channels=channels, full_res_convs=full_res_convs, attention=attention, stem=stem
    )


def fold_batchnorm(model):
    """A copy of ``model`` for inference with every BatchNorm folded into its convolution.

    ``conv → BN`` becomes one convolution with ``w' = w · γ/σ`` and
    ``b' = (b - μ) · γ/σ + β`` (running statistics), which saves a pass over
    every feature map.  The copy is in eval mode; ``model`` is unchanged.
    """
    import copy

    import torch
    from torch import nn

    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        layers = list(seq)
        for i in range(len(layers) - 1):
            conv, bn = layers[i], layers[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
                fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                  conv.padding, conv.dilation, conv.groups, bias=True)
                with torch.no_grad():
                    fused.weight.copy_(conv.weight * scale[:, None, None, None])
                    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
                seq[i] = fused
                seq[i + 1] = nn.Identity()
    return model
