"""Batched, vectorised image augmentations on tensors that are already on the device.

The usual torchvision pipeline augments one PIL image at a time in DataLoader worker
processes; with the whole dataset in accelerator memory that would be the bottleneck
and would make the randomness depend on worker scheduling. Here each function draws
all per-image random parameters for a batch from one ``torch.Generator`` and applies
them with index arithmetic / broadcasting (no Python loop over images), so a batch's
augmentation is a pure function of the generator state.

Images are already normalised, so zero padding / zeroed cutout pixels equal the
per-channel dataset mean (the same convention DARTS' cutout uses, since it runs
after normalisation).

Random draw order (documented because tests and resumption rely on it):
``random_crop_flip`` draws row offsets, column offsets, then flip coins;
``cutout`` draws centre rows, then centre columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["crop_flip", "cutout", "cutout_at", "random_crop_flip"]


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(x.shape)}")


def _randint(
    high: int, n: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``n`` integers in ``[0, high)`` drawn on the generator's device, moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    out = torch.randint(0, high, (n,), generator=generator, device=gen_device)
    return out.to(device)


def crop_flip(
    x: torch.Tensor,
    offset_y: torch.Tensor,
    offset_x: torch.Tensor,
    flip: torch.Tensor | None,
    padding: int,
) -> torch.Tensor:
    """Deterministic core of :func:`random_crop_flip` with explicit per-image parameters.

    Image ``i`` of the result is ``pad(x)[i, :, oy:oy+H, ox:ox+W]`` (``oy``/``ox`` in
    ``[0, 2*padding]``), mirrored left-right where ``flip[i]`` is true. Implemented as
    one advanced-indexing gather over the padded batch.
    """
    _check_images(x)
    n, c, h, w = x.shape
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    dev = x.device
    oy = offset_y.to(dev, torch.long)
    ox = offset_x.to(dev, torch.long)
    rows = oy[:, None] + torch.arange(h, device=dev)[None, :]  # (N, H)
    cols = ox[:, None] + torch.arange(w, device=dev)[None, :]  # (N, W)
    if flip is not None:
        cols = torch.where(flip.to(dev, torch.bool)[:, None], cols.flip(1), cols)
    n_idx = torch.arange(n, device=dev)[:, None, None, None]
    c_idx = torch.arange(c, device=dev)[None, :, None, None]
    return padded[n_idx, c_idx, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(
    x: torch.Tensor,
    padding: int = 4,
    generator: torch.Generator | None = None,
    *,
    flip: bool = True,
) -> torch.Tensor:
    """Zero-pad by ``padding``, crop back to the original size at an independent random
    offset per image, and (if ``flip``) mirror each image left-right with p=0.5.

    This is the standard CIFAR augmentation (``RandomCrop(32, padding=4)`` +
    ``RandomHorizontalFlip``); ``flip=False`` is for data where mirroring changes the
    label (digits). Returns a new tensor; ``x`` is not modified.
    """
    _check_images(x)
    n = x.shape[0]
    oy = _randint(2 * padding + 1, n, generator, x.device)
    ox = _randint(2 * padding + 1, n, generator, x.device)
    coins = _randint(2, n, generator, x.device).bool() if flip else None
    return crop_flip(x, oy, ox, coins, padding)


def cutout_at(
    x: torch.Tensor, centre_y: torch.Tensor, centre_x: torch.Tensor, length: int
) -> torch.Tensor:
    """Deterministic core of :func:`cutout`: zero, in every channel of image ``i``, the
    rows ``[cy - length//2, cy - length//2 + length)`` and the same for columns, clipped
    at the borders. The mask is built by broadcasting row and column tests."""
    _check_images(x)
    if length <= 0:
        return x.clone()
    _, _, h, w = x.shape
    dev = x.device
    y0 = centre_y.to(dev, torch.long)[:, None] - length // 2  # (N, 1)
    x0 = centre_x.to(dev, torch.long)[:, None] - length // 2
    r = torch.arange(h, device=dev)[None, :]
    k = torch.arange(w, device=dev)[None, :]
    in_rows = (r >= y0) & (r < y0 + length)  # (N, H)
    in_cols = (k >= x0) & (k < x0 + length)  # (N, W)
    hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (N, 1, H, W)
    return x.masked_fill(hole, 0.0)


def cutout(x: torch.Tensor, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cutout (DeVries & Taylor) as in DARTS ``train.py``: per image, a centre is drawn
    uniformly over all pixels and a ``length x length`` square around it is zeroed,
    clipped at the borders (so squares near an edge are smaller). ``length <= 0`` is a
    no-op copy. For even ``length`` this is exactly DARTS' square; for odd ``length``
    the square is ``length`` wide here (DARTS' integer halving gives ``length - 1``)."""
    _check_images(x)
    if length <= 0:
        return x.clone()
    n, _, h, w = x.shape
    cy = _randint(h, n, generator, x.device)
    cx = _randint(w, n, generator, x.device)
    return cutout_at(x, cy, cx, length)
