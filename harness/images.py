"""A small deterministic image set with natural-image statistics.

Drift figures need inputs whose content survives resizing the way photos do. Pure noise does not: resized
noise is a different signal at every scale. "Dead leaves" images (occluding discs with a power-law size
distribution) are the standard synthetic stand-in for natural images: they have the 1/f spectrum, sharp
edges and flat regions of photographs, and they are cheap to generate from a seed.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from harness import faults

BASE_SIZE = 512      # images are drawn once at this size and resized to every size a case needs
NUM_DISCS = 1500
MIN_RADIUS, MAX_RADIUS = 4.0, 160.0
DRAWING_VERSION = 1   # bump when the drawing changes: cached image sets are keyed by it


def dead_leaves(num_images: int, seed: int, cache_dir: Path | None = None) -> torch.Tensor:
    """(N, 3, BASE_SIZE, BASE_SIZE) float images in [0, 1]. Drawing takes a quarter of a second an image, so
    with a ``cache_dir`` they are drawn once per machine and read back after (written atomically: workers
    may race); do not modify the returned tensor."""
    if cache_dir is None:
        return _drawn(num_images, seed)
    path = cache_dir / 'images' / f'dead-leaves-v{DRAWING_VERSION}-{num_images}-{seed}.safetensors'
    if not path.exists():
        drawn = _drawn(num_images, seed)
        try:
            _cached(drawn, path)
        except Exception as e:   # noqa: BLE001 - safetensors wraps the OSError
            if not faults.is_disk_full(e):
                raise
            return drawn   # the cache saves time only: a full disk costs the next run the drawing again
    return load_file(str(path))['images']


def _cached(drawn: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f'.{path.name}.{os.getpid()}')
    try:
        save_file({'images': drawn}, str(staging))
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def _drawn(num_images: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([_one_image(generator) for _ in range(num_images)])


def resized(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Images resized to (H, W) with antialiasing, as a data pipeline would."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode='bilinear', antialias=True, align_corners=False).clamp(0, 1)


def normalized(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def _one_image(generator: torch.Generator) -> torch.Tensor:
    image = torch.rand(3, 1, 1, generator=generator).expand(3, BASE_SIZE, BASE_SIZE).clone()
    # radii with density ~ r^-3 (scale invariance), sampled by inverting the CDF
    u = torch.rand(NUM_DISCS, generator=generator)
    radii = (MIN_RADIUS ** -2 - u * (MIN_RADIUS ** -2 - MAX_RADIUS ** -2)) ** -0.5
    centres = torch.rand(NUM_DISCS, 2, generator=generator) * BASE_SIZE
    colours = torch.rand(NUM_DISCS, 3, generator=generator)
    for r, (cy, cx), colour in zip(radii.tolist(), centres.tolist(), colours):
        _paint_disc(image, cy, cx, r, colour)   # later discs occlude earlier ones
    return image


def _paint_disc(image: torch.Tensor, cy: float, cx: float, r: float, colour: torch.Tensor) -> None:
    """Paint only the disc's bounding box: a full-image mask per disc would cost seconds per image."""
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, BASE_SIZE)
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, BASE_SIZE)
    ys = torch.arange(y0, y1, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(x0, x1, dtype=torch.float32)[None, :] + 0.5
    inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= r * r
    image[:, y0:y1, x0:x1][:, inside] = colour[:, None]
