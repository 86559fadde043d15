"""The interface every family implements, plus the parts ViT and Swin share."""
from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from harness.families.geometry import Geometry, Size, Target, to_size
from harness.families.probe import meta_model
from harness.reference.patch_kernel import resample_patch_kernel
from harness.spec.vocabulary import PATHS
from harness.store.case_result import CHECKS

if TYPE_CHECKING:
    from harness.checkpoints.store import Checkpoint
    from harness.families.probe import Probe
    from harness.spec.model import ModelSpec

GEOMETRIC = ('larger', 'smaller', 'rectangular', 'square', 'transposed')   # the size triggers (harness.spec.triggers)


class Family:
    name: str
    rank: int = 0                          # families are asked to claim a model in rank order, lowest first
    category: str = 'oracle'               # what `harness coverage` calls its models (harness.analysis.coverage)
    model_classes: tuple[str, ...] = ()    # the timm classes it claims, subclasses included ('module.Class')
    paths: tuple[str, ...] = PATHS         # the build paths that can reach a new size
    checks: tuple[str, ...] = CHECKS       # the checks its cases run
    window_sizes_apply: bool = False       # a matrix's window_sizes axis applies
    stages_pad: bool = False               # each downsampling stage pads an odd map (Swin's patch merging) and
                                           # each window attention pads to whole windows: sizes need whole
                                           # patches only, the oracle follows the padded maps
    patch_sizes_apply: bool = True         # a matrix's patch_sizes axis applies
    fixed_patch: str = 'its patch size cannot be changed'   # why, where patch_sizes do not apply
    stores_geometry: bool = True           # a resized model stores its new configuration (img_size, grid, ...)
    resamples_per_forward: bool = False    # every forward resamples (NaFlexVit): fidelity compares every path's
                                           # outputs with dynamic_reference, and its weights and derived tensors
    same_model_as_create: tuple[str, ...] = ()   # paths that build what create builds (NaFlexVit's dynamic):
                                                 # their parity with create would compare a model with itself
    attention: str = 'global'              # what one position attends to: 'global' (every position), 'windows'
                                           # (its window), 'none'; sizes the forward-memory estimate
                                           # (harness.spec.limits.forward_bytes)
    trigger_kinds: tuple[str, ...] = GEOMETRIC   # the geometry changes that exercise its resize code, from
                                           # harness.spec.triggers.KINDS: what `targets: auto` expands into ('img_pad':
                                           # its oracle models dynamic_img_pad, so sizes need not tile)

    # --- membership ----------------------------------------------------------------------------------
    def claim(self, probe: 'Probe') -> str | None:
        """None when the probed model is in this family; else why not, for the user ('' when it is simply
        another kind of model). By default: an instance of one of ``model_classes``."""
        classes = tuple(filter(None, map(timm_class, self.model_classes)))
        return None if classes and isinstance(probe.model, classes) else ''

    def unsupported(self, model_name: str) -> str | None:
        """Why every case of this model is ``unsupported``, or None."""
        return None

    def miniatures(self, model: nn.Module) -> tuple[dict[str, Any], ...]:
        """Constructor overrides that shrink ``model`` (its meta build at its own configuration) in depth, width
        and heads, most shrunk first: the zoo sweep (:mod:`harness.spec.zoo`) takes the first whose geometry equals
        the real one in everything resizing depends on. None by default: the family's models run as they are."""
        return ()

    # --- reading and predicting geometry -------------------------------------------------------------
    def sized_source(self, size: Size, geometry: Geometry) -> dict[str, Size]:
        """The overrides that make a checkpoint of the family trained at ``size`` (a trigger set's rectangular
        source variant), from its ``geometry`` at its own size: the image size, by default."""
        return {'img_size': size}

    def geometry(self, model: nn.Module) -> Geometry:
        """Geometry read off a built model."""
        raise NotImplementedError

    def source_geometry(self, model: nn.Module, spec: 'ModelSpec') -> Geometry:
        """Geometry of a checkpoint's model at its own configuration: what :meth:`geometry` reads off it,
        completed with what only the matrix entry's overrides say (Swin: the windows it was configured with,
        which a stage smaller than its window does not show). By default :meth:`geometry`."""
        return self.geometry(model)

    def expected_geometry(self, source: Geometry, target: Target) -> Geometry:
        """Geometry a model loaded from ``source`` must have once resized to ``target``."""
        raise NotImplementedError

    def computed_geometry(self, source: Geometry, target: Target, path: str) -> Geometry:
        """The configuration a path is documented to compute with at ``target``: the expected geometry, except
        where timm documents that a path keeps something of the source (families override)."""
        return self.expected_geometry(source, target)

    def dynamic_reference(self, native: nn.Module, spec: 'ModelSpec', source: Geometry, computed: Geometry,
                          weights: dict[str, torch.Tensor]) -> nn.Module:
        """A model that computes, without timm's dynamic code path, what ``dynamic_img_size`` must compute at
        the ``computed`` geometry from the source ``weights`` as the harness resamples them."""
        raise NotImplementedError

    def dynamic_kwargs(self) -> dict[str, Any]:
        """What ``create_model`` takes to resample at run time (the ``dynamic`` path's model is the source
        configuration built with these)."""
        return {'dynamic_img_size': True}

    def expected_shapes(self, geometry: Geometry, batch: int) -> dict[str, Any]:
        """Output shapes that follow from ``geometry``: forward_features, logits and intermediates."""
        raise NotImplementedError

    def resample_state_dict(self, state_dict: dict[str, torch.Tensor], source: Geometry, target: Geometry,
                            interpolation: str, antialias: bool) -> dict[str, torch.Tensor]:
        """The harness's own resampling of a source state dict to the target geometry.

        The base class handles the patch-embedding kernel, which every family has; families extend it.
        """
        out = dict(state_dict)
        kernel = 'patch_embed.proj.weight'
        if kernel in out and tuple(out[kernel].shape[-2:]) != target.patch_size:
            out[kernel] = resample_patch_kernel(
                out[kernel], target.patch_size, interpolation=interpolation, antialias=antialias)
        return out

    def create_resampling(self, model_name: str, checkpoint: 'Checkpoint') -> tuple[str, bool]:
        """(interpolation, antialias) that timm's loader uses when it resamples ``checkpoint`` for ``model_name``
        at create time: the origin's loader's by default; families override where timm chooses per model."""
        return checkpoint.interpolation, checkpoint.antialias

    def derived_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Tensors the model computes from its configuration instead of loading them (rotary embeddings,
        continuous position bias tables), by name. Fidelity compares them with :meth:`expected_derived_tensors`
        as it compares the state dict with :meth:`resample_state_dict`. None by default."""
        return {}

    def expected_derived_tensors(self, weights: dict[str, torch.Tensor], spec: 'ModelSpec', source: Geometry,
                                 computed: Geometry) -> dict[str, torch.Tensor]:
        """What :meth:`derived_tensors` must give for a model computing with the ``computed`` geometry from
        ``weights`` (the harness's resample of the source checkpoint), from the harness's own implementation."""
        return {}

    def forward_tensors(self, model: nn.Module, computed: Geometry) -> dict[str, torch.Tensor]:
        """Tensors the model computes inside its forward pass for an input of the ``computed`` geometry, taken
        by running timm's own code for that step on a blank input (``dynamic_img_size``: the position embedding
        as ``_pos_embed`` resamples and adds it, the rotary embedding it returns, the shifted-window masks each
        block builds for the input), by name. Fidelity compares them with :meth:`expected_forward_tensors` on
        every path: on ``dynamic``, where nothing resized is stored, they are all it has. None by default."""
        return {}

    def expected_forward_tensors(self, weights: dict[str, torch.Tensor], spec: 'ModelSpec', source: Geometry,
                                 computed: Geometry) -> dict[str, torch.Tensor]:
        """What :meth:`forward_tensors` must give at the ``computed`` geometry, from ``weights`` (the harness's
        resample of the source checkpoint to that geometry), by the harness's own implementation."""
        return {}

    # --- arguments per build path ----------------------------------------------------------------------
    def create_kwargs(self, target: Target) -> dict[str, Any]:
        kwargs: dict[str, Any] = {'img_size': target.img_size}
        if target.patch_size is not None:
            kwargs['patch_size'] = target.patch_size
        if target.window_size is not None:
            kwargs['window_size'] = target.window_size
        return kwargs

    def set_input_size_kwargs(self, target: Target, source: Geometry) -> dict[str, Any]:
        return self.create_kwargs(target)

    def only_img_size_changes(self, target: Target, source: Geometry) -> bool:
        """Whether `dynamic_img_size` can reach the target: it changes the input size, nothing else."""
        return target.patch_size is None or to_size(target.patch_size) == source.patch_size

    # --- validation ----------------------------------------------------------------------------------
    def axis_problem(self, axis: str, model: 'ModelSpec') -> str | None:
        """Why a matrix's ``axis`` (``patch_sizes``, ``window_sizes``) cannot apply to ``model``, or None: an
        axis is applied or refused, never dropped."""
        if axis == 'patch_sizes' and not self.patch_sizes_apply:
            return f'{self.fixed_patch} ({self.name} family)'
        if axis == 'window_sizes' and not self.window_sizes_apply:
            from harness.families import families
            windowed = sorted(family.name for family in families() if family.window_sizes_apply)
            return f'the {self.name} family has no window a case can set (window_sizes apply to {", ".join(windowed)})'
        return None

    def size_problem(self, model: 'ModelSpec', size: Size, patch_size: int | None) -> str | None:
        """Why ``size`` cannot be a target for this model, or None. A model built with ``dynamic_img_pad`` pads
        any size to whole patches, where the family's oracle models the padding (``img_pad`` trigger); a family
        whose stages pad their maps (:attr:`stages_pad`) needs whole patches only."""
        source = native_geometry(self, model)
        patch = to_size(patch_size) if patch_size else source.patch_size
        down = 1 if self.stages_pad else self.total_downsample(source)
        stride = (patch[0] * down, patch[1] * down)
        pads = bool(model.kwargs.get('dynamic_img_pad'))
        if pads and 'img_pad' in self.trigger_kinds:
            return None
        if size[0] % stride[0] or size[1] % stride[1]:
            return (f'{size[0]}x{size[1]} does not tile into patches of {patch[0]}x{patch[1]}'
                    + (f' downsampled {down}x' if down > 1 else '')
                    + f'; each side must be a multiple of {stride[0]}x{stride[1]}'
                    + (f' (dynamic_img_pad: the {self.name} family\'s oracle does not model padded inputs)'
                       if pads else ''))
        return None

    def total_downsample(self, geometry: Geometry) -> int:
        return 1


def traits_img_size(model: nn.Module) -> Size | None:
    """The (H, W) timm (1.0.31 on) records in a model's traits as the size it was built or last resized for;
    None where it records none."""
    size = (getattr(model, '_traits', None) or {}).get('img_size')
    return to_size(size) if size is not None else None


def timm_class(dotted: str) -> type | None:
    """``'timm.models.deit.VisionTransformerDistilled'`` as a class; None where this timm release lacks it."""
    module, _, name = dotted.rpartition('.')
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


@functools.lru_cache(maxsize=None)
def native_geometry(family: Family, model: 'ModelSpec') -> Geometry:
    """Geometry of a model at its own configuration, read off its meta-device build."""
    return family.source_geometry(meta_model(model), model)


HEAD_SETTINGS = ('num_classes', 'global_pool')


def head_kwargs(model: nn.Module) -> dict[str, Any]:
    """The head settings a reference model must share with the checkpoint's ``model`` (as loaded): a fine-tuned
    checkpoint's class count comes from its origin (``{file: PATH, num_classes: 10}``), not from the matrix
    entry's overrides, and its pooling decides which head layers exist."""
    return {k: getattr(model, k) for k in HEAD_SETTINGS if isinstance(getattr(model, k, None), (int, str))}


def model_carrying(name: str, kwargs: dict[str, Any], weights: dict[str, torch.Tensor]) -> nn.Module:
    """timm's ``name`` built with ``kwargs`` and ``weights`` as its own tensors, in eval mode.

    Built on the meta device, so timm's initialisation (seconds for a ViT-B on a CPU) is not spent on values
    that are replaced at once; built for real where the meta device cannot build the model or where it keeps
    state outside its state dict (a buffer left on the meta device).
    """
    import timm
    try:
        with torch.device('meta'):
            model = timm.create_model(name, pretrained=False, **kwargs)
        model.load_state_dict(weights, assign=True)
        if not any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            return model.eval()
    except RuntimeError:   # a meta build that calls .item(), or keys the weights do not cover
        pass
    model = timm.create_model(name, pretrained=False, **kwargs)
    missing, _ = model.load_state_dict(weights, strict=False)
    if missing:
        raise RuntimeError(f'harness reference model lacks {missing[:5]}')
    return model.eval()

