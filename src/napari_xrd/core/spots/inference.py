"""Tiled U-Net inference on full-size frames.

A frame is cut into overlapping square tiles (``tile`` pixels, neighbours
overlapping by ``2 · margin``); each tile is normalised on its own (see
:func:`prepare_input`; the model card's ``inference.input`` says how), tiles
go through the network in batches, and only the centre of each tile
(``margin`` pixels trimmed on every side) is written to the output, so every
output pixel comes from a tile in which it has at least ``margin`` pixels of
context: the stitching has no seams.  The frame is padded
with masked pixels so that border pixels get the same treatment.

Masked pixels (``pixel_mask != 0``, NaN) are zeroed in the input, flagged in a
second input channel, and forced to probability 0 in the output.

With a geometry, the "local" background is computed once for the whole frame
(:func:`frame_background`), and where the frame has powder rings that the
16-pixel blocks cannot follow, their profile in 2θ is part of it
(:mod:`~napari_xrd.core.spots.ring_background`).

On CUDA the forward pass runs under fp16 autocast; on the CPU, in float32.
Peak memory is a few copies of the frame plus one batch of tiles.
"""

from __future__ import annotations

import numpy as np

from napari_xrd.core.progress import check_cancel, report

__all__ = [
    "INPUT_NORMALISATIONS",
    "RING_BACKGROUND_MODES",
    "prepare_input",
    "frame_background",
    "predict_spot_probability",
    "predict_spot_mask",
    "DEFAULT_TILE",
    "DEFAULT_MARGIN",
]

DEFAULT_TILE = 256
DEFAULT_MARGIN = 16


#: ``prepare_input(normalisation=...)`` choices; a model card's ``inference.input`` names the one its model was trained with.
INPUT_NORMALISATIONS = ("tile", "local")
_BLOCK = 16  # pixels: the local background is the median of blocks this size

#: ``predict_spot_probability(ring_background=...)`` choices.
RING_BACKGROUND_MODES = ("auto", "on", "off")


def anscombe(image) -> np.ndarray:
    """``2 sqrt(I + 3/8)`` of counts (negative, NaN and inf read as 0), float32."""
    out = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0)  # a copy, then in place:
    np.clip(out, 0, None, out=out)  # one full-size array instead of five
    out += np.float32(0.375)
    np.sqrt(out, out=out)
    out *= np.float32(2.0)
    return out


def _block_median_background(a, valid, block: int = _BLOCK) -> np.ndarray:
    """Smooth local background of ``a``: medians of ``block``-pixel squares, bilinearly interpolated.

    A Bragg spot covers a small part of a block and does not move its
    median; a water ring or a background gradient does.  The median of an
    even count is the lower middle value.  Blocks without a valid pixel take
    the median of the other blocks.
    """
    return _interpolated_blocks(_block_medians(a, valid, block), a.shape, block)


def _block_medians(a, valid, block: int = _BLOCK) -> np.ndarray:
    """(n_blocks_slow, n_blocks_fast) float32 medians of ``a``'s valid pixels per block (see above)."""
    ny, nx = a.shape
    by, bx = -(-ny // block), -(-nx // block)
    pad = np.full((by * block, bx * block), np.nan, dtype=np.float32)
    np.copyto(pad[:ny, :nx], a, where=np.asarray(valid, dtype=bool))
    ranked = pad.reshape(by, block, bx, block).transpose(0, 2, 1, 3).reshape(by * bx, block * block)
    del pad
    n_valid = np.isfinite(ranked).sum(axis=1)
    ranked.sort(axis=1)  # in place (a copy already); NaN (invalid) last: the valid values' median is at (n - 1) // 2
    med = ranked[np.arange(by * bx), np.maximum(n_valid - 1, 0) // 2]
    med[n_valid == 0] = np.median(med[n_valid > 0]) if (n_valid > 0).any() else 0.0
    return med.reshape(by, bx).astype(np.float32)


def _interpolated_blocks(med, shape, block: int = _BLOCK, rows=slice(None)) -> np.ndarray:
    """Block medians interpolated at the pixels of ``rows`` (a slice) of a frame of ``shape``.

    Bilinear between block centres ((k + 1/2) * block - 1/2 in pixel
    indices), constant beyond; each row as in the whole frame's.  Gathers,
    not matrix products: no BLAS thread pool to fight torch's threads for
    the cores, and linear in the frame's size (a dense product costs
    n_slow · n_blocks · n_fast).
    """
    ny, nx = shape
    by, bx = med.shape
    i0, i1, w = (x[rows] for x in _interp_index(ny, by, block))
    values = med[i0] * (1 - w)[:, None] + med[i1] * w[:, None]
    j0, j1, v = _interp_index(nx, bx, block)
    out = values[:, j0]
    out *= 1 - v
    second = values[:, j1]
    second *= v
    out += second
    return out


def _interp_index(n: int, n_blocks: int, block: int):
    """Neighbouring block centres and the weight of the second, for linear interpolation to ``n`` pixels."""
    pos = np.clip((np.arange(n, dtype=np.float32) + 0.5) / block - 0.5, 0, n_blocks - 1)
    i0 = np.minimum(np.floor(pos).astype(np.intp), max(n_blocks - 2, 0))
    i1 = np.minimum(i0 + 1, n_blocks - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def _interp_matrix(n: int, n_blocks: int, block: int) -> np.ndarray:
    """(n, n_blocks) weights of linear interpolation from block centres to pixel indices."""
    centres = (np.arange(n_blocks) + 0.5) * block - 0.5
    w = np.zeros((n, n_blocks), dtype=np.float32)
    for k in range(n_blocks):
        e = np.zeros(n_blocks)
        e[k] = 1.0
        w[:, k] = np.interp(np.arange(n), centres, e)
    return w


def prepare_input(image, valid, *, normalisation: str = "tile", background=None) -> np.ndarray:
    """Network input for one tile: normalised counts and the valid-pixel mask.

    The counts are variance-stabilised (Anscombe, ``a = 2 sqrt(I + 3/8)``,
    whose Poisson noise is about 1 whatever the count), a background is
    subtracted and the result divided by a robust noise scale (at least 1:
    Poisson noise), so that background noise has unit scale whatever the
    detector, gain or exposure; ``4 asinh(z / 4)`` then compresses strong
    spots and saturated pixels.

    ``normalisation="tile"`` (the first shipped model) subtracts the tile's
    median and divides by 1.4826 · MAD over the tile.  A tile crossing a
    water ring or a steep background then gets a scale of 2–3 instead of
    1, and a spot on the ring loses that factor in contrast, and more to the
    ``asinh`` since its background sits far above the median.
    ``normalisation="local"`` subtracts a local background (medians of
    16-pixel blocks, interpolated) and estimates the scale from differences
    of neighbouring pixels, which background gradients do not inflate.

    Parameters
    ----------
    image : (H, W) array_like
        Raw counts (negative values clipped to 0).
    valid : (H, W) bool array_like
        True for usable pixels.
    normalisation : {"tile", "local"}
    background : (H, W) array_like, optional
        For ``normalisation="local"``: the background of the Anscombe
        transform to subtract instead of this tile's block medians (a cut
        from :func:`frame_background`).

    Returns
    -------
    x : (2, H, W) float32 ndarray
        Channel 0: normalised image, 0 on invalid pixels; channel 1: ``valid``.
    """
    if normalisation not in INPUT_NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {INPUT_NORMALISATIONS}, got {normalisation!r}")
    img = np.asarray(image, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(img)
    a = anscombe(img)
    out = np.zeros((2,) + img.shape, dtype=np.float32)
    if valid.any():
        if normalisation == "tile":
            vals = a[valid]
            if vals.size > 16384:  # a strided sample is enough for robust statistics
                vals = vals[:: vals.size // 8192]
            med = np.median(vals)
            scale = max(1.4826 * float(np.median(np.abs(vals - med))), 1.0)
            z = (a - med) / np.float32(scale)
        else:
            r = a - (_block_median_background(a, valid) if background is None else background)
            pairs = valid[:, 1:] & valid[:, :-1]
            diffs = np.abs(r[:, 1:] - r[:, :-1])[pairs]
            if diffs.size > 16384:
                diffs = diffs[:: diffs.size // 8192]
            scale = max(1.4826 * float(np.median(diffs)) / np.sqrt(2.0), 1.0) if diffs.size else 1.0
            z = r / np.float32(scale)
        out[0] = np.where(valid, 4.0 * np.arcsinh(z / 4.0), 0.0)
    out[1] = valid
    return out


def _structure(r, valid) -> float:
    """Mean of ``min(r², 9)`` over valid pixels: what a background leaves."""
    return float(np.mean(np.minimum(r[valid] ** 2, 9.0))) if valid.any() else 0.0


def frame_background(image, valid, geometry=None, *, ring_background: str = "auto"):
    """The whole frame's background for the "local" input, in Anscombe units.

    Medians of 16-pixel blocks, interpolated, as :func:`prepare_input`
    computes per tile; with ``geometry``, also the powder rings' profile in
    2θ (:func:`~napari_xrd.core.spots.ring_background.powder_ring_background`)
    under them.  ``ring_background="auto"`` keeps the profile only where it
    passes a cross-check of the beam centre: with each quadrant's profile
    taken from the quadrant opposite it, the background must still leave
    less structure than the blocks alone.  Structure is the mean of
    ``min(r², 9)`` over valid pixels of the residual ``r`` (every other
    row); background noise gives about 1, a ring that the blocks cannot
    follow adds to it.  A beam centre that is off moves the rings opposite
    ways in opposite quadrants, and the check fails.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        Raw counts.
    valid : (n_slow, n_fast) bool array_like
    geometry : DetectorGeometry, optional
        Needed for the ring profile; its shape must be the image's.
    ring_background : {"auto", "on", "off"}

    Returns
    -------
    background : (n_slow, n_fast) float32 ndarray or None
        None where the per-tile block medians are to be used ("off", or no
        geometry); the frame's block medians alone where "auto" finds that
        the profile does not help.
    info : dict
        ``rings_used`` (bool) and, for "auto", the structures left by the
        blocks alone, by the rings and by the opposite quadrants' rings
        (``structure_blocks``, ``structure_rings``, ``structure_opposite``).
    """
    from napari_xrd.core.spots.ring_background import powder_ring_background

    if ring_background not in RING_BACKGROUND_MODES:
        raise ValueError(f"ring_background must be one of {RING_BACKGROUND_MODES}, got {ring_background!r}")
    if geometry is None or ring_background == "off":
        return None, {"rings_used": False}
    image = np.asarray(image)
    if tuple(geometry.shape) != image.shape:
        raise ValueError(f"geometry shape {tuple(geometry.shape)} does not match image shape {image.shape}")
    valid = np.asarray(valid, dtype=bool) & np.isfinite(image)
    a = anscombe(image)
    radius = geometry.equivalent_radius_map()
    if ring_background == "on":
        profile = powder_ring_background(a, geometry, valid=valid, radius=radius, min_sd=1.0)
        rings = _block_median_background(a - profile, valid)
        rings += profile
        return rings, {"rings_used": True}
    profile, opposite = powder_ring_background(a, geometry, valid=valid, radius=radius, min_sd=1.0,
                                               with_opposite=True)
    rings_med, blocks_med = _block_medians(a - profile, valid), _block_medians(a, valid)
    rows = slice(None, None, 2)  # every other row is enough to measure structure
    a2, valid2 = a[rows], valid[rows]
    rings2 = _interpolated_blocks(rings_med, a.shape, rows=rows)
    rings2 += profile[rows]
    info = {"structure_blocks": _structure(a2 - _interpolated_blocks(blocks_med, a.shape, rows=rows), valid2),
            "structure_rings": _structure(a2 - rings2, valid2),
            # the check: the rings' background with the opposite quadrants' profile in place of the
            # frame's; a wrong beam centre shifts the rings opposite ways there
            "structure_opposite": _structure(a2 - rings2 + profile[rows] - opposite[rows], valid2)}
    info["rings_used"] = info["structure_opposite"] < info["structure_blocks"]
    if not info["rings_used"]:  # the whole frame only for the background chosen
        return _interpolated_blocks(blocks_med, a.shape), info
    rings = _interpolated_blocks(rings_med, a.shape)
    rings += profile
    return rings, info


_INFERENCE_COPIES = None


def _inference_model(net):
    """BatchNorm-folded, channels-last copy of ``net`` (cached per module)."""
    import weakref

    import torch

    global _INFERENCE_COPIES
    if _INFERENCE_COPIES is None:
        _INFERENCE_COPIES = weakref.WeakKeyDictionary()
    fast = _INFERENCE_COPIES.get(net)
    if fast is None:
        from napari_xrd.core.models.attention_unet import fold_batchnorm

        fast = fold_batchnorm(net) if any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) else net
        fast = fast.to(memory_format=torch.channels_last)  # oneDNN and cuDNN prefer NHWC convolutions
        _INFERENCE_COPIES[net] = fast
    return fast


class _torch_threads:
    """Run a block with ``n`` torch intra-op threads (None: leave as is), then restore the setting."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        if self.n is not None:
            if int(self.n) < 1:
                raise ValueError(f"threads must be at least 1, got {self.n}")
            torch.set_num_threads(int(self.n))

    def __exit__(self, *exc):
        import torch

        if self.n is not None:
            torch.set_num_threads(self.before)
        return False


def _tile_origins(n: int, step: int) -> list[int]:
    return list(range(0, max(n, 1), step))


def predict_spot_probability(
    image,
    *,
    pixel_mask=None,
    model="default",
    device="auto",
    tile: int | None = None,
    margin: int | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    precision: str = "auto",
    input_on_device: bool | None = None,
    geometry=None,
    ring_background: str = "auto",
    pool_exclusion=None,
    background=None,
    return_background: bool = False,
    progress=None,
    cancel=None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """Per-pixel spot probability from the U-Net, for a whole frame.

    Parameters
    ----------
    image : (n_slow, n_fast) array_like
        Raw counts.
    pixel_mask : (n_slow, n_fast) uint32 array_like, optional
        0 = good pixel.
    model : str, path or torch.nn.Module
        A model name for :func:`~napari_xrd.core.models.weights.load_model`
        (task "spots"), a path to its card, "default", or a module.
    device : str
        "auto", "cpu", "cuda", ...
    tile, margin : int, optional
        Tile size and trimmed margin (default: from the model card, else
        256 and 16).  ``tile`` must be a multiple of the model's stride.
    batch_size : int, optional
        Tiles per forward pass (default 8 on the CPU, 32 on a GPU).
    threads : int, optional
        CPU threads for the forward pass (default: torch's setting, one per
        core).  On a machine shared with other jobs, 1 thread per process
        avoids the long stalls of threads waiting for a busy core; to screen
        many frames, run one single-threaded process per core.
    precision : {"auto", "float32", "mixed"}
        "auto": fp16 autocast on CUDA, float32 on the CPU; "mixed": bf16
        autocast on the CPU too (about 3 times faster convolutions on a CPU
        with native bf16 instructions; the spots differ a little); "float32":
        full precision everywhere
        (:func:`~napari_xrd.core.device.autocast_context`).  The input's
        background subtraction is float32 either way.
    input_on_device : bool, optional
        Normalise the tiles with torch on the inference device
        (:func:`~napari_xrd.core.spots.device_input.prepare_input_batch`)
        instead of NumPy on the CPU.  Default: on a GPU yes, on the CPU no
        (NumPy is faster there).
    geometry : DetectorGeometry, optional
        The frame's geometry: with it, the input background is computed for
        the whole frame and can include the powder rings' profile in 2θ
        (:func:`frame_background`; models whose card says
        ``inference.input = "local"`` only).
    ring_background : {"auto", "on", "off"}
        Whether that profile is used: where it helps, always, or never
        (then each tile's block medians, as without a geometry).
    pool_exclusion : (n_slow, n_fast) bool array_like, optional
        Pixels left out of the statistics that the network's channel
        attention pools over each tile (the ice lines on a frame with
        spotty ice: bright grains there would otherwise damp the channels
        that find spots elsewhere in the tile).  The pixels are still seen
        and predicted.
    background : (n_slow, n_fast) float32 ndarray, optional
        The input's background for this frame as an earlier pass on it
        computed it (``return_background``), to save computing it again;
        models whose card says ``inference.input = "local"`` only.
    return_background : bool
        Also return the background used.
    progress, cancel : callables, optional

    Returns
    -------
    probability : (n_slow, n_fast) float32 ndarray
        0 on masked pixels.
    background : (n_slow, n_fast) float32 ndarray or None
        With ``return_background``: the input's background
        (:func:`frame_background`), None where each tile's block medians
        were used.
    """
    import torch

    from napari_xrd.core.device import autocast_context, select_device

    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (n_slow, n_fast), got shape {image.shape}")
    valid = np.isfinite(image) if image.dtype.kind == "f" else np.ones(image.shape, bool)
    if pixel_mask is not None:
        if np.shape(pixel_mask) != image.shape:
            raise ValueError(f"pixel_mask shape {np.shape(pixel_mask)} does not match image shape {image.shape}")
        valid &= np.asarray(pixel_mask) == 0

    dev = select_device(device)
    autocast_context(dev, precision=precision)  # an unknown precision is refused before any work
    if isinstance(model, torch.nn.Module):
        net = model.to(dev).eval()
    else:
        from napari_xrd.core.models.weights import load_model

        net, _ = load_model(model, task="spots", device=str(dev))
    # tiles and input normalisation: the model card's "inference", which load_model (or training) attaches
    card_inference = getattr(net, "inference_options", {})
    normalisation = card_inference.get("input", "tile")
    net = _inference_model(net)
    tile = int(tile or card_inference.get("tile", DEFAULT_TILE))
    margin = int(margin if margin is not None else card_inference.get("margin", DEFAULT_MARGIN))
    multiple = int(getattr(net, "multiple", 1))
    if tile % multiple:
        raise ValueError(f"tile {tile} must be a multiple of the model's stride {multiple}")
    step = tile - 2 * margin
    if step <= 0:
        raise ValueError(f"margin {margin} too large for tile {tile}")
    if batch_size is None:
        batch_size = 32 if dev.type == "cuda" else 8
    if normalisation != "local":
        background = None
    elif background is None:
        background, _ = frame_background(image, valid, geometry, ring_background=ring_background)
    elif np.shape(background) != image.shape:
        raise ValueError(f"background shape {np.shape(background)} does not match image shape {image.shape}")

    ny, nx = image.shape
    ys, xs = _tile_origins(ny, step), _tile_origins(nx, step)
    pad_y = len(ys) * step + 2 * margin - ny - margin
    pad_x = len(xs) * step + 2 * margin - nx - margin
    img_p = np.pad(np.asarray(image, dtype=np.float32), ((margin, pad_y), (margin, pad_x)))
    val_p = np.pad(valid, ((margin, pad_y), (margin, pad_x)))
    bg_p = None if background is None else np.pad(background, ((margin, pad_y), (margin, pad_x)))
    pool_p = None
    if pool_exclusion is not None:
        if np.shape(pool_exclusion) != image.shape:
            raise ValueError(f"pool_exclusion shape {np.shape(pool_exclusion)} does not match image shape "
                             f"{image.shape}")
        # the padding counts, as it does without an exclusion: only the excluded pixels differ
        pool_p = np.pad(~np.asarray(pool_exclusion, dtype=bool), ((margin, pad_y), (margin, pad_x)),
                        constant_values=True)
    on_device = dev.type != "cpu" if input_on_device is None else bool(input_on_device)
    origins = [(y, x) for y in ys for x in xs]
    total = len(origins)
    report(progress, 0, total, "U-Net tiles")
    with torch.inference_mode(), _torch_threads(threads if dev.type == "cpu" else None):
        if on_device:  # the frame goes to the device once; tiles are cut, normalised and stitched there
            from napari_xrd.core.spots.device_input import prepare_input_batch

            img_t, val_t = torch.from_numpy(img_p).to(dev), torch.from_numpy(val_p).to(dev)
            bg_t = None if bg_p is None else torch.from_numpy(bg_p).to(dev)
            prob = torch.zeros((ny, nx), dtype=torch.float32, device=dev)
        else:
            prob = np.zeros((ny, nx), dtype=np.float32)
        for b0 in range(0, total, batch_size):
            check_cancel(cancel)
            batch = origins[b0 : b0 + batch_size]
            if on_device:  # float32: fp16 would blur the background subtraction
                xb = prepare_input_batch(torch.stack([img_t[y : y + tile, x : x + tile] for y, x in batch]),
                                         torch.stack([val_t[y : y + tile, x : x + tile] for y, x in batch]),
                                         normalisation=normalisation,
                                         background=None if bg_t is None else
                                         torch.stack([bg_t[y : y + tile, x : x + tile] for y, x in batch]))
            else:
                xb = torch.from_numpy(np.stack([
                    prepare_input(img_p[y : y + tile, x : x + tile], val_p[y : y + tile, x : x + tile],
                                  normalisation=normalisation,
                                  background=None if bg_p is None else bg_p[y : y + tile, x : x + tile])
                    for y, x in batch])).to(dev)
            weight = None if pool_p is None else torch.from_numpy(
                np.stack([pool_p[y : y + tile, x : x + tile] for y, x in batch])[:, None].astype(np.float32)).to(dev)
            with autocast_context(dev, precision=precision):
                xb = xb.contiguous(memory_format=torch.channels_last)
                logits = net(xb) if weight is None else net(xb, weight)
            p = torch.sigmoid(logits.float())[:, 0, margin : tile - margin, margin : tile - margin]
            if not on_device:
                p = p.cpu().numpy()
            for (y, x), pt in zip(batch, p):
                h, w = min(step, ny - y), min(step, nx - x)
                prob[y : y + h, x : x + w] = pt[:h, :w]
            report(progress, min(b0 + batch_size, total), total, "U-Net tiles")
    if on_device:
        prob = prob.cpu().numpy()
    prob[~valid] = 0.0
    return (prob, background) if return_background else prob


def predict_spot_mask(image, *, threshold: float = 0.5, **kwargs) -> np.ndarray:
    """Boolean spot mask: :func:`predict_spot_probability` above ``threshold``.

    Keyword arguments are passed to :func:`predict_spot_probability`.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    return predict_spot_probability(image, **kwargs) > threshold
