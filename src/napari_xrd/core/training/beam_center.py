"""Synthetic frames for the beam-centre model, its tests and its benchmark.

A deliberately small renderer, independent of :mod:`napari_xrd.core.simulate`:
it draws only what the beam-centre estimators look at (powder-like rings,
Friedel-related and unrelated spots, smooth backgrounds, a beamstop with its
arm, module gaps, dead pixels) with widely randomised strengths, so that a
model trained on it cannot lean on any one of them.  Every frame is described
by its *true* :class:`~napari_xrd.core.geometry.DetectorGeometry` and a
*header* geometry whose beam centre is off by up to a few millimetres and
whose tilt is zero, as on a real beamline.

:func:`train_beam_center_model` trains :mod:`napari_xrd.core.models.resnet_center`
on frames rendered on the fly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from napari_xrd.core.geometry import DetectorGeometry
from napari_xrd.core.masks import DEAD, GAP

__all__ = [
    "ICE_D_SPACINGS",
    "Scene",
    "random_scene",
    "render_frame",
    "model_input",
    "train_beam_center_model",
]

#: Hexagonal ice Ih d-spacings (Å) of its strongest powder rings.
ICE_D_SPACINGS = (3.897, 3.669, 3.441, 2.671, 2.249, 2.072, 1.948, 1.918, 1.883)


@dataclass
class Scene:
    """What a synthetic frame shows.

    Attributes
    ----------
    geometry : DetectorGeometry
        The true geometry (beam centre, pitch, yaw).
    header : DetectorGeometry
        What a header would claim: beam centre off by up to ``max_offset_mm``,
        no tilt.
    water, ice, n_spots, flat, beamstop, gaps, ... :
        Rendering options passed to :func:`render_frame`.
    """

    geometry: DetectorGeometry
    header: DetectorGeometry
    options: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        o = self.options
        parts = []
        if o.get("ice", 0) > 0:
            parts.append("ice")
        if o.get("water", 0) > 0:
            parts.append("water")
        if not parts:
            parts.append("flat" if o.get("flat", 0) > 0 else "spots-only")
        return "+".join(parts)


def random_scene(
    rng: np.random.Generator,
    *,
    detector: str = "pilatus6m",
    shape: tuple[int, int] | None = None,
    max_offset_mm: float = 3.0,
    max_tilt_deg: float = 3.0,
    kind: str | None = None,
) -> Scene:
    """Draw a random frame description.

    Parameters
    ----------
    rng : numpy.random.Generator
    detector : str
        Catalogue name (:data:`napari_xrd.core.detectors.DETECTORS`).
    shape : (int, int), optional
        Binned image size (keeps the detector's physical size).
    max_offset_mm : float
        True beam centre lies within ``±max_offset_mm`` (each axis) of the
        header's, which is near the detector centre.
    max_tilt_deg : float
        Pitch and yaw uniform in ``±max_tilt_deg``.
    kind : {"water", "ice", "flat", "spots"}, optional
        Background kind; random when omitted.
    """
    from napari_xrd.core.detectors import get_detector

    det = get_detector(detector)
    base = det.geometry(distance=1.0, wavelength=1.0, shape=shape)
    px = base.pixel_size
    n_slow, n_fast = base.shape
    header_c = (
        n_fast * (0.5 + rng.uniform(-0.04, 0.04)),
        n_slow * (0.5 + rng.uniform(-0.04, 0.04)),
    )
    off = rng.uniform(-max_offset_mm, max_offset_mm, 2) / px
    true_c = (header_c[0] + off[0], header_c[1] + off[1])
    distance = float(rng.uniform(120.0, 400.0))
    wavelength = float(rng.uniform(0.7, 1.4))
    pitch, yaw = rng.uniform(-max_tilt_deg, max_tilt_deg, 2)
    geometry = base.replace(distance=distance, wavelength=wavelength, beam_center=true_c, pitch=pitch, yaw=yaw)
    header = base.replace(distance=distance, wavelength=wavelength, beam_center=header_c)
    if kind is None:
        kind = rng.choice(["water", "water", "ice", "flat", "spots"])
    opts = dict(
        water=float(rng.uniform(0.3, 2.0)) if kind in ("water", "ice") and rng.random() > 0.2 else 0.0,
        ice=float(rng.uniform(0.5, 4.0)) if kind == "ice" else 0.0,
        flat=float(rng.uniform(0.5, 3.0)) if kind == "flat" else 0.0,
        n_spots=int(rng.integers(0, 80)) if kind in ("water", "ice") else int(rng.integers(80, 600)),
        friedel_fraction=float(rng.uniform(0.3, 0.9)),
        beamstop=bool(rng.random() > 0.15),
        gaps=bool(rng.random() > 0.2),
        counts=float(10 ** rng.uniform(0.5, 2.2)),
        seed=int(rng.integers(2**31)),
    )
    if kind == "water" and opts["water"] == 0.0:
        opts["water"] = 1.0
    return Scene(geometry=geometry, header=header, options=opts)


def _spot_directions(rng, n, wavelength, two_theta_max, friedel_fraction):
    s_max = 2 * math.sin(two_theta_max / 2) / wavelength
    s = s_max * np.sqrt(rng.uniform(0.003, 1.0, n))  # more spots at high resolution
    phi = rng.uniform(-np.pi, np.pi, n)
    tt = 2 * np.arcsin(np.clip(s * wavelength / 2, 0, 1))
    inten = rng.exponential(1.0, n) * np.exp(-8.0 * s**2)
    mates = rng.random(n) < friedel_fraction
    tt = np.concatenate([tt, tt[mates]])
    phi = np.concatenate([phi, phi[mates] + np.pi])
    inten = np.concatenate([inten, inten[mates] * rng.uniform(0.5, 1.5, mates.sum())])
    k = np.stack([np.sin(tt) * np.cos(phi), np.sin(tt) * np.sin(phi), np.cos(tt)], axis=-1)
    return k, inten


def render_frame(
    geometry: DetectorGeometry,
    *,
    water: float = 1.0,
    ice: float = 0.0,
    flat: float = 0.0,
    n_spots: int = 100,
    friedel_fraction: float = 0.7,
    beamstop: bool = True,
    gaps: bool = True,
    counts: float = 30.0,
    seed: int = 0,
    detector: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic frame with Poisson noise.

    Parameters
    ----------
    geometry : DetectorGeometry
        True geometry of the frame.
    water, ice, flat : float
        Strengths (relative to the diffuse background) of a water ring, of
        ice Ih powder rings and of a flat background (``flat > 0`` and
        ``water == 0``: no diffuse falloff at all).
    n_spots : int
        Bragg-like spots; a ``friedel_fraction`` of them get a mate at the
        same 2θ and opposite azimuth.
    beamstop, gaps : bool
        Draw a beamstop shadow with an arm; mask module gaps (as -1).
    counts : float
        Mean background counts per pixel (sets the noise level).
    seed : int
    detector : str, optional
        Catalogue name for the gap layout; guessed from ``geometry.name``.

    Returns
    -------
    image : (n_slow, n_fast) float32 ndarray
        Counts; -1 in gaps, -2 on dead pixels.
    pixel_mask : (n_slow, n_fast) uint32 ndarray
        GAP and DEAD bits.
    """
    from napari_xrd.core.detectors import get_detector

    rng = np.random.default_rng(seed)
    n_slow, n_fast = geometry.shape
    tt = geometry.two_theta_map()
    s = 2 * np.sin(tt / 2) / geometry.wavelength  # 1/d
    az = geometry.azimuth_map()
    pol = 1.0 - 0.5 * (np.sin(tt) ** 2) * (1 + 0.9 * np.cos(2 * az))
    sa = geometry.solid_angle_map()
    if water == 0 and flat > 0:
        bg = np.full(geometry.shape, flat, dtype=np.float64)
    else:
        bg = 0.3 + 1.5 * np.exp(-s / rng.uniform(0.03, 0.1)) + flat
        bg = bg + water * (np.exp(-0.5 * ((s - 0.31) / 0.035) ** 2) + 0.4 * np.exp(-0.5 * ((s - 0.47) / 0.07) ** 2))
    if ice > 0:
        width = rng.uniform(0.0015, 0.004)
        for i, d in enumerate(ICE_D_SPACINGS):
            strength = ice * rng.uniform(0.3, 1.0) * (1.0 if i < 3 else 0.5)
            bg = bg + strength * np.exp(-0.5 * ((s - 1 / d) / width) ** 2)
    img = bg * pol * sa * counts
    if n_spots > 0:
        tt_max = float(tt.max())
        k, inten = _spot_directions(rng, n_spots, geometry.wavelength, tt_max, friedel_fraction)
        pos = geometry.project(k)
        ok = np.all(np.isfinite(pos), axis=1)
        pos, inten = pos[ok], inten[ok]
        sigma = rng.uniform(0.7, 1.6) * max(1.0, 0.172 / geometry.pixel_size)
        h = int(math.ceil(3 * sigma))
        off = np.arange(-h, h + 1)
        c0 = np.floor(pos[:, 0]).astype(int)
        r0 = np.floor(pos[:, 1]).astype(int)
        cols = c0[:, None, None] + off[None, None, :]
        rows = r0[:, None, None] + off[None, :, None]
        d2 = ((cols + 0.5) - pos[:, 0, None, None]) ** 2 + ((rows + 0.5) - pos[:, 1, None, None]) ** 2
        g = np.exp(-0.5 * d2 / sigma**2)
        peak = counts * 40.0 * rng.uniform(0.5, 5.0)
        vals = g * (inten * peak)[:, None, None]
        rows, cols = np.broadcast_arrays(rows, cols)
        inside = (rows >= 0) & (rows < n_slow) & (cols >= 0) & (cols < n_fast)
        np.add.at(img, (rows[inside], cols[inside]), vals[inside])
    if beamstop:
        r_bs = rng.uniform(1.0, 3.0) / geometry.pixel_size
        bc = np.array(geometry.beam_center) + rng.uniform(-0.2, 0.2, 2) * r_bs
        f = np.arange(n_fast) + 0.5
        sl = (np.arange(n_slow) + 0.5)[:, None]
        shadow = np.hypot(f - bc[0], sl - bc[1]) < r_bs
        ang = rng.uniform(-np.pi, np.pi)
        u = (f - bc[0]) * math.cos(ang) + (sl - bc[1]) * math.sin(ang)
        v = -(f - bc[0]) * math.sin(ang) + (sl - bc[1]) * math.cos(ang)
        shadow |= (u > 0) & (np.abs(v) < r_bs * rng.uniform(0.3, 0.6))
        img = np.where(shadow, img * 0.02 + 0.5, img)
    img = rng.poisson(np.clip(img, 0, None)).astype(np.float32)
    mask = np.zeros(geometry.shape, dtype=np.uint32)
    if gaps:
        name = detector or geometry.name
        try:
            det = get_detector(name)
        except ValueError:
            det = None
        if det is not None:
            mask |= det.gap_mask(geometry.shape).astype(np.uint32)
    n_dead = int(rng.integers(0, max(2, geometry.shape[0] * geometry.shape[1] // 20000)))
    dead = rng.integers(0, img.size, n_dead)
    mask.flat[dead] |= DEAD
    img[(mask & GAP) > 0] = -1
    img[(mask & DEAD) > 0] = -2
    return img, mask


def model_input(
    image: np.ndarray, *, pixel_mask: np.ndarray | None = None, size: int = 128, valid: np.ndarray | None = None
) -> np.ndarray:
    """Downsample a frame to the ResNet's input: ``(size, size)`` float32 log-normalised.

    Masked pixels are ignored in the block means; the result is
    ``log1p`` of the block means scaled to its 99.5th percentile.  ``valid``
    (bool, the frame's shape) may be given instead of ``pixel_mask`` when the
    caller has already worked it out.
    """
    from napari_xrd.core.beam_center._common import block_mean

    if valid is not None:
        data, valid = block_mean(np.asarray(image, dtype=np.float32), valid=valid, out_shape=(size, size))
    else:
        data, valid = block_mean(image, pixel_mask=pixel_mask, out_shape=(size, size))
    x = np.log1p(np.clip(data, 0, None))
    hi = np.percentile(x[valid], 99.5) if valid.any() else 1.0
    x = np.where(valid, x / max(hi, 1e-6), 0.0)
    return np.clip(x, 0, 2).astype(np.float32)


def make_dataset(
    n: int, *, seed: int, size: int = 128, render_size: int = 256, max_offset_mm: float = 3.0, progress=None
):
    """Render ``n`` random frames (all detectors, all background kinds).

    Returns
    -------
    x : (n, 1, size, size) float32 ndarray
    y : (n, 4) float32 ndarray
        Targets of :func:`napari_xrd.core.models.resnet_center.encode_targets`.
    kinds : list of str
    """
    from napari_xrd.core.models.resnet_center import encode_targets
    from napari_xrd.core.progress import report

    rng = np.random.default_rng(seed)
    dets = ["pilatus6m", "eiger16m", "adsc_q4"]
    x = np.zeros((n, 1, size, size), np.float32)
    y = np.zeros((n, 4), np.float32)
    kinds = []
    for i in range(n):
        det = dets[i % 3]
        sc = random_scene(rng, detector=det, shape=(render_size, render_size), max_offset_mm=max_offset_mm)
        img, mask = render_frame(sc.geometry, detector=det, **sc.options)
        x[i, 0] = model_input(img, pixel_mask=mask, size=size)
        g = sc.geometry
        y[i] = encode_targets(g.beam_center, g.shape, g.pitch, g.yaw)
        kinds.append(sc.kind)
        if i % 50 == 0:
            report(progress, i, n, "rendering")
    return x, y, kinds


def training_step(model, optimizer, xb, yb, rng):
    """One optimiser step on a batch, with random fast/slow flips; returns the loss.

    Flipping the fast axis negates the centre's u and the yaw; flipping the
    slow axis negates v and the pitch.  The means learn from the squared
    error, the log-variances from the Gaussian NLL of the (detached)
    residuals, so a growing variance cannot switch off the means' gradient.
    """
    import torch

    xb, yb = xb.clone(), yb.clone()
    if rng.random() < 0.5:  # flip fast: u -> -u, yaw -> -yaw
        xb = xb.flip(-1)
        yb[:, 0] = -yb[:, 0]
        yb[:, 3] = -yb[:, 3]
    if rng.random() < 0.5:  # flip slow: v -> -v, pitch -> -pitch
        xb = xb.flip(-2)
        yb[:, 1] = -yb[:, 1]
        yb[:, 2] = -yb[:, 2]
    out = model(xb)
    mu, lv = out[:, :4], out[:, 4:]
    nll = 0.5 * (torch.exp(-lv) * (yb - mu.detach()) ** 2 + lv)
    loss = ((yb - mu) ** 2).mean() + nll.mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def train_beam_center_model(
    *,
    n_train: int = 6000,
    n_val: int = 600,
    epochs: int = 12,
    batch_size: int = 32,
    seed: int = 0,
    size: int = 128,
    lr: float = 2e-3,
    time_limit_s: float | None = None,
    render_size: int = 256,
    max_offset_mm: float = 3.0,
    progress=None,
    cancel=None,
):
    """Train :func:`~napari_xrd.core.models.resnet_center.build_resnet_center`.

    Training frames come from seed ``seed``, held-out validation frames from
    ``seed + 1_000_003``; random flips of the fast/slow axes (which flip
    centre and yaw/pitch) double the variety.

    Returns
    -------
    model : torch.nn.Module
    metrics : dict
        Held-out median/95th-percentile centre error (px of the full
        detector) and tilt error (deg), per background kind too.
    """
    import torch

    from napari_xrd.core.models.resnet_center import CENTER_SCALE, TILT_SCALE, build_resnet_center
    from napari_xrd.core.progress import check_cancel, report

    torch.manual_seed(seed)
    t0 = time.time()
    kw = dict(size=size, render_size=render_size, max_offset_mm=max_offset_mm)
    xt, yt, _ = make_dataset(n_train, seed=seed, progress=progress, **kw)
    xv, yv, kv = make_dataset(n_val, seed=seed + 1_000_003, **kw)
    model = build_resnet_center(size=size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (n_train // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    xt_t, yt_t = torch.from_numpy(xt), torch.from_numpy(yt)
    rng = np.random.default_rng(seed)
    step = 0
    for ep in range(epochs):
        model.train()
        perm = rng.permutation(n_train)
        for b in range(n_train // batch_size):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            loss = training_step(model, opt, xt_t[idx], yt_t[idx], rng)
            if step < steps - 1:
                sched.step()
            step += 1
            if b % 20 == 0:
                report(progress, step, steps, f"epoch {ep + 1} loss {loss.item():.3f}")
                check_cancel(cancel)
        if time_limit_s is not None and time.time() - t0 > time_limit_s:
            break
    model.eval()
    with torch.no_grad():
        pv = torch.cat([model(torch.from_numpy(xv[i : i + 64])) for i in range(0, n_val, 64)]).numpy()
    # errors in pixels of the full detector (Pilatus-sized: ~2500 px a side)
    n_full = 2500.0
    cerr = np.hypot(pv[:, 0] - yv[:, 0], pv[:, 1] - yv[:, 1]) / CENTER_SCALE * n_full
    terr = np.abs(pv[:, 2:4] - yv[:, 2:4]).max(axis=1) * TILT_SCALE
    csig = np.exp(0.5 * pv[:, 4:6]).max(axis=1) / CENTER_SCALE * n_full
    metrics = {
        "n_val": int(n_val),
        "center_error_px_median": float(np.median(cerr)),
        "center_error_px_p95": float(np.percentile(cerr, 95)),
        "tilt_error_deg_median": float(np.median(terr)),
        "predicted_sigma_px_median": float(np.median(csig)),
        "fraction_within_2sigma": float(np.mean(cerr < 2 * np.sqrt(2) * csig)),
        "epochs_run": int(ep + 1),
        "train_seconds": float(time.time() - t0),
        "note": "pixels of a 2500-px-wide detector; validation frames rendered with a different seed",
    }
    for k in sorted(set(kv)):
        sel = np.array([kk == k for kk in kv])
        metrics[f"center_error_px_median_{k}"] = float(np.median(cerr[sel]))
    return model, metrics
