"""The checkpoint at its own configuration: loaded once per checkpoint, with its outputs at its own size, the
source weights that fidelity resamples, and its top-1 accuracy when there are labelled images and real weights.

The first stage of :mod:`harness.case`; everything after reads a :class:`Native` and never changes it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness import checks, images
from harness.accuracy import LabelledImages, labelled_images, top1_accuracy
from harness.build import Built, build_native
from harness.checkpoints.origins import origin_named
from harness.checkpoints.source import checkpoint_source
from harness.checkpoints.store import Checkpoint
from harness.families import Geometry
from harness.image_tree import ImageTree
from harness.spec.cases import Case


@dataclass(frozen=True)
class NativeAccuracy:
    """The user's images labelled for a checkpoint's classes, and its top-1 accuracy on them at its own size."""
    images: LabelledImages
    top1: float


@dataclass
class Native:
    """A checkpoint loaded at its own configuration, its outputs at its own size, and the source weights that
    fidelity resamples (with how far the native load is from them, when they are known, and what they are
    where they are not all the checkpoint's own); its accuracy when there are labelled images and the
    weights are real."""
    checkpoint: Checkpoint
    built: Built
    geometry: Geometry
    outputs: checks.Outputs
    reference: dict[str, torch.Tensor]
    load_diff: checks.TensorDiff | None
    accuracy: NativeAccuracy | None = None
    reference_note: str | None = None


def load_native(checkpoint: Checkpoint, case: Case, image_set: torch.Tensor, device: torch.device,
                image_tree: ImageTree | None = None) -> Native:
    built = build_native(checkpoint)
    reference, note, compared = checkpoint.reference_state_dict(), None, True
    if reference is None:   # hub or user file: its tensors read back from the file by the harness
        source = checkpoint_source(checkpoint, built.model)
        reference, note, compared = source.tensors, source.note, source.from_file > 0
    model = built.model.to(device)
    geometry = case.family.source_geometry(model, case.model)
    outputs = checks.forward_outputs(model, model_inputs(model, geometry.img_size, image_set, device))
    accuracy = native_accuracy(checkpoint, model, geometry.img_size, image_tree, device)
    load_diff = checks.state_dict_diff(model.state_dict(), reference) if compared else None
    return Native(checkpoint, built, geometry, outputs, reference, load_diff, accuracy, note)


def native_accuracy(checkpoint: Checkpoint, model: nn.Module, size: tuple[int, int], image_tree: ImageTree | None,
                    device: torch.device) -> NativeAccuracy | None:
    """None without labelled images, or when the weights are synthesized: their accuracy means nothing."""
    if image_tree is None or origin_named(checkpoint.origin).synthesized:
        return None
    labelled = labelled_images(image_tree, model.num_classes)
    return NativeAccuracy(labelled, top1_accuracy(model, size, labelled, device))


def model_inputs(model: nn.Module, size: tuple[int, int], image_set: torch.Tensor,
                 device: torch.device) -> torch.Tensor:
    """The image set at ``size``, normalised as the model's pretrained config says, in the dtype of the model's
    first floating parameter (a model cast to bf16 takes bf16 images, as a user feeds it)."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    batch = images.normalized(images.resized(image_set, size),
                              cfg.get('mean', (0.485, 0.456, 0.406)), cfg.get('std', (0.229, 0.224, 0.225)))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), batch.dtype)
    return batch.to(device, dtype=dtype)
