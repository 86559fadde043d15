"""NaFlexVit (``naflexvit.py``): a ViT that resamples its position table to every batch's patch grid.

How it changes size (timm 1.0.20 on): the learned position embedding is stored as the grid it covers,
``embeds.pos_embed`` ``(1, H, W, C)`` (``pos_embed_grid_size``, 16x16 unless set; factorized models store one
table per axis), and every forward resamples it to the input's patch grid, with the model's own
``pos_embed_interp_mode`` (bicubic; bilinear for SigLIP and RADIO), antialiasing and ``align_corners`` options,
aspect-preserving or not (:mod:`harness.reference.naflex_pos_embed`). So:

* ``create`` (``img_size=`` the target) builds the source model again and loads its table as it is:
  ``img_size`` would size the table only with ``pos_embed_grid_size=None``, which ``create_model`` drops (it
  drops every None argument), so every registered NaFlexVit keeps its set grid;
* ``dynamic`` is the source model fed target-size images: NaFlexVit takes no ``dynamic_img_size`` (it always
  resamples per batch);
* ``set_input_size`` does not exist: ``unsupported``.

Fidelity, on every path: the loaded state dict against the checkpoint; what timm adds as position embedding at two
probe grids (:data:`PROBE_GRIDS`, a wide and a tall one) against the harness's resample; and the logits at the
target against a NaFlexVit built with its table at the target grid (so timm adds it as it is) carrying the harness's
resample.

Not expressed through the three paths: NaFlex mode proper (pre-patchified ``patches`` / ``patch_coord`` /
``patch_valid`` dicts from the NaFlex collator, a different grid per image in one batch, padding tokens
masked) and its variable patch size (``PatchEmbedInterpolator`` on 5-D patch inputs): the harness feeds a
batch of same-size images, so patch sizes do not apply, and a patch-size change has no image-input path in
timm.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from harness.families import Geometry, Size, register_family, to_size
from harness.families.base import GEOMETRIC, Family, head_kwargs, model_carrying, traits_img_size
from harness.families.vit import VitFamily
from harness.reference.naflex_pos_embed import naflex_axis_table, naflex_pos_table

PROBE_GRIDS = ((2, 7), (9, 4))   # where derived_tensors reads the added position embedding: wide and tall


@dataclass(frozen=True)
class TableSettings:
    """How a NaFlexVit resamples its table (its ``pos_embed_*`` options)."""
    kind: str | None = None          # 'learned' (one grid table), 'factorized' (one per axis), None (none)
    interpolation: str = 'bicubic'
    antialias: bool = True
    align_corners: bool = False
    aspect_preserving: bool = False


@dataclass(frozen=True)
class NaFlexGeometry(Geometry):
    table: TableSettings = field(default_factory=TableSettings)


@register_family
class NaFlexVitFamily(VitFamily):
    name = 'naflexvit'
    trigger_kinds = GEOMETRIC   # its own patch embedding pads nothing
    model_classes = ('timm.models.naflexvit.NaFlexVit',)
    paths = ('create', 'dynamic')
    patch_sizes_apply = False
    fixed_patch = ('timm changes its patch size only for pre-patchified NaFlex inputs, not for the image '
                   'batches the harness feeds')
    stores_geometry = False
    resamples_per_forward = True
    same_model_as_create = ('dynamic',)   # both build the source model and feed it target-size images

    def claim(self, probe):
        return Family.claim(self, probe)   # by class: VitFamily's patch-embedding test does not apply

    def geometry(self, model: nn.Module) -> NaFlexGeometry:
        """Its own size is the one it was built for (traits) or the checkpoint's config says: the model stores
        none, it resamples to every size."""
        embeds = model.embeds
        size = traits_img_size(model) or to_size(tuple(model.pretrained_cfg['input_size'][1:]))
        patch = to_size(embeds.patch_size)
        return NaFlexGeometry(
            img_size=size, patch_size=patch, grid_size=(size[0] // patch[0], size[1] // patch[1]),
            embed_dim=model.embed_dim, num_features=model.num_features, num_classes=model.num_classes,
            num_prefix_tokens=model.num_prefix_tokens, pos_prefix_tokens=0, stage_depths=(len(model.blocks),),
            table=_settings(embeds))

    def sized_source(self, size, geometry):
        """A checkpoint trained at ``size`` has its table at that size's grid: a rectangular source is a
        rectangular table, which a classic ViT release must carry flat (timm reshapes only a square one)."""
        patch = geometry.patch_size
        return {'img_size': size, 'pos_embed_grid_size': (size[0] // patch[0], size[1] // patch[1])}

    def resample_state_dict(self, state_dict, source, target, interpolation, antialias):
        """Loading resamples nothing: the tables stay at their own grid."""
        return dict(state_dict)

    def dynamic_kwargs(self) -> dict:
        """None: NaFlexVit resamples every batch and takes no ``dynamic_img_size``."""
        return {}

    def dynamic_reference(self, native, spec, source, computed, weights):
        """NaFlexVit with its tables at the target grid (so timm adds them as they are, aspect preserving or
        not), carrying the harness's resample of the checkpoint's tables."""
        tables = tables_at(source.table, weights, computed.grid_size) if source.table.kind else {}
        kwargs = {**spec.kwargs, **head_kwargs(native), 'pos_embed_grid_size': computed.grid_size,
                  'pos_embed_ar_preserving': False}
        return model_carrying(spec.name, kwargs, {**weights, **tables})

    def derived_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """What timm adds as position embedding at each of :data:`PROBE_GRIDS`: logits alone barely see it
        where the head reads one token, so the tables are compared as they are too."""
        return added_pos_embeds(model)

    def expected_derived_tensors(self, weights, spec, source, computed):
        return expected_added_pos_embeds(source.table, weights)


def added_pos_embeds(model: nn.Module) -> dict[str, torch.Tensor]:
    """What the model's own ``_apply_*_pos_embed`` adds to blank tokens at each of :data:`PROBE_GRIDS`."""
    embeds, added = model.embeds, {}
    kind = _settings(embeds).kind
    for grid in PROBE_GRIDS if kind else ():
        tokens = torch.zeros(1, grid[0] * grid[1], embeds.embed_dim, device=next(model.parameters()).device)
        with torch.no_grad():
            getattr(embeds, f'_apply_{kind}_pos_embed')(tokens, list(grid))
        added[_probe_key(grid)] = tokens
    return added


def expected_added_pos_embeds(settings: TableSettings, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What :func:`added_pos_embeds` must give for a model with ``settings`` holding ``weights``' tables."""
    if settings.kind is None:
        return {}
    return {_probe_key(grid): _added_at(settings, weights, grid) for grid in PROBE_GRIDS}


def _settings(embeds: nn.Module) -> TableSettings:
    """A model's table settings (options a release lacks at the values it then hard-codes)."""
    kind = 'learned' if getattr(embeds, 'pos_embed', None) is not None else \
        'factorized' if getattr(embeds, 'pos_embed_y', None) is not None else None
    return TableSettings(kind, embeds.pos_embed_interp_mode, getattr(embeds, 'pos_embed_antialias', True),
                         getattr(embeds, 'pos_embed_align_corners', False),
                         getattr(embeds, 'pos_embed_ar_preserving', False))


def tables_at(settings: TableSettings, weights: dict[str, torch.Tensor], grid: Size) -> dict[str, torch.Tensor]:
    """The harness's resample of the tables in ``weights`` to ``grid``, as a model with ``settings`` does."""
    if settings.kind == 'learned':
        return {'embeds.pos_embed': naflex_pos_table(
            weights['embeds.pos_embed'], grid, interpolation=settings.interpolation, antialias=settings.antialias,
            align_corners=settings.align_corners, aspect_preserving=settings.aspect_preserving)}
    return {key: naflex_axis_table(weights[key], length, max(grid), aspect_preserving=settings.aspect_preserving)
            for key, length in (('embeds.pos_embed_y', grid[0]), ('embeds.pos_embed_x', grid[1]))}


def _added_at(settings: TableSettings, weights: dict[str, torch.Tensor], grid: Size) -> torch.Tensor:
    """The ``(1, gh * gw, C)`` position embedding added to the patch tokens of a ``grid`` input."""
    tables = tables_at(settings, weights, grid)
    if settings.kind == 'learned':
        return tables['embeds.pos_embed'].flatten(1, 2)
    rows, columns = tables['embeds.pos_embed_y'], tables['embeds.pos_embed_x']
    return (rows[:, :, None] + columns[:, None]).flatten(1, 2)


def _probe_key(grid: Size) -> str:
    return f'embeds.pos_embed added at a {grid[0]}x{grid[1]} grid'
