"""Top-1 accuracy on a user's labelled images (:mod:`harness.image_tree`), the real figure beside drift.

Images are preprocessed as timm preprocesses them for evaluation: the model's own data config
(``resolve_data_config``: crop_pct, crop mode, interpolation, mean, std) with the input size set to the size
the model runs at, then timm's ``create_transform``. The native-size model and the path's model each get
their own size, so the figures show what resizing does to a user's accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torch import nn

from harness.image_tree import ImageTree, class_indices

BATCH_SIZE = 32   # images per forward pass


@dataclass(frozen=True)
class LabelledImages:
    """A tree's images and their class indices among one model's classes."""
    files: tuple[Path, ...]
    labels: torch.Tensor   # (N,) int64


def labelled_images(tree: ImageTree, num_classes: int) -> LabelledImages:
    indices = class_indices(tree, num_classes)
    pairs = [(image, indices[name]) for name, images in tree.folders for image in images]
    return LabelledImages(tuple(image for image, _ in pairs), torch.tensor([index for _, index in pairs]))


def eval_transform(model: nn.Module, size: tuple[int, int]) -> Callable[[Image.Image], torch.Tensor]:
    """timm's evaluation transform for ``model`` at ``size``: its own data config, only the input size set."""
    from timm.data import create_transform, resolve_data_config
    config = resolve_data_config(model=model)
    config['input_size'] = (config['input_size'][0], *size)
    return create_transform(**config)


@torch.no_grad()
def top1_accuracy(model: nn.Module, size: tuple[int, int], images: LabelledImages, device: torch.device) -> float:
    """The fraction of ``images`` whose label is ``model``'s highest logit, the images preprocessed for ``size``."""
    transform = eval_transform(model, size)
    correct = 0
    for start in range(0, len(images.files), BATCH_SIZE):
        files = images.files[start:start + BATCH_SIZE]
        batch = torch.stack([transform(_rgb(file)) for file in files]).to(device)
        predicted = model(batch).argmax(dim=-1).cpu()
        correct += int((predicted == images.labels[start:start + len(files)]).sum())
    return correct / len(images.files)


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert('RGB')
