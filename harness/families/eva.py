"""EVA-style Vision Transformers (timm's ``eva.py``): a ViT whose queries and keys are also rotated by a rotary
position embedding (RoPE).

Every ``Eva``: EVA-01 and EVA-02, timm's SBB rope ViTs, the Perception Encoder (``vit_pe_*``), RoPE-ViT
(``vit_*_rope_*``, axial and learned 'mixed' frequencies), DINOv3 and its derivatives. What they share with
a ViT (patch and prefix tokens, an absolute position embedding where they have one, the patch kernel) is
:class:`~harness.families.vit.VitFamily`'s; the rotary embedding is recomputed by
:mod:`harness.reference.rope` and compared with the one the model's forward pass gives its blocks.

What the rotary embedding must be at a target grid is the same on every path, because timm documents one
definition for any grid: ``create_model(img_size=...)`` builds it for the new grid, ``set_input_size`` rebuilds
it (``update_feat_shape``) and ``dynamic_img_size`` builds it per forward pass (``get_embed(shape)``). Per
scheme that definition is: integer patch positions (plus ``rope_grid_offset``) that extrapolate to a larger
grid, unless the model sets ``ref_feat_shape``, EVA-02's pretraining grid, onto which any grid is stretched
(EVA-02, the SBB rope ViTs, PE); coordinates normalised to [-1, 1] for DINOv3 (it interpolates by design);
learned frequencies, taken from the checkpoint unchanged, on integer positions for RoPE-Mixed.

Where that is timm's documented choice rather than the original's: PE's ``ref_feat_shape`` stretches positions
onto the native grid where Meta's reference (``Rope2D.update_grid``) keeps raw integer positions at any grid;
EVA-CLIP B/16's 14x14 grid stretched onto 16x16 is EVA-CLIP's own scheme (``pt_seq_len`` 16); DINOv3's
periods are float32 where Meta's release stores them in bfloat16 (timm's comment says so). The harness checks
timm against timm's definition; those are not findings.

The configuration (scheme, temperature, offset, indexing, reference grid) is read off the source model's
rope module, the channel layout off its attention (what consumes the embedding): the checkpoint was trained
with them. A resize must not change them; everything computed from them is the harness's own.
"""
from __future__ import annotations

import torch
from torch import nn

from harness.families import register_family, to_size
from harness.families.base import GEOMETRIC, head_kwargs, meta_model, model_carrying
from harness.families.vit import POS_EMBED_ADDED, VitFamily, expected_pos_embed_added, pos_embed_pass
from harness.reference.padding import PaddedInput, padded_size
from harness.reference.rope import RopeConfig, rope_embedding

ROPE_KEY = 'rope.embedding'     # the derived tensor fidelity compares: the embedding the blocks get
ROPE_RETURNED = 'rope as _pos_embed returns it'   # the forward tensor (dynamic path): the embedding for the input
MIXED_FREQS_KEY = 'rope.freqs'  # RoPE-Mixed's learned frequencies, a checkpoint tensor
_ROPE_KINDS = {'RotaryEmbeddingCat': 'axial', 'RotaryEmbeddingMixed': 'mixed', 'RotaryEmbeddingDinoV3': 'dinov3'}


class UnsupportedRope(ValueError):
    """A rotary embedding the oracle does not model."""


@register_family
class EvaFamily(VitFamily):
    name = 'eva'
    trigger_kinds = GEOMETRIC + ('patch', 'img_pad')
    model_classes = ('timm.models.eva.Eva',)

    def claim(self, probe):
        why_not = super().claim(probe)
        if why_not is None:
            try:
                rope_config(probe.model)
            except UnsupportedRope as e:
                return f'{e}; the eva oracle does not model it yet'
        return why_not

    def derived_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {} if getattr(model, 'rope', None) is None else {ROPE_KEY: rope_in_use(model)}

    def expected_derived_tensors(self, weights, spec, source, computed):
        config = rope_config(meta_model(spec))
        if config is None:
            return {}
        return {ROPE_KEY: rope_embedding(config, computed.grid_size, weights.get(MIXED_FREQS_KEY))}

    def forward_tensors(self, model, computed):
        """ViT's, and the rotary embedding ``_pos_embed`` returns for the input's grid (``dynamic_img_size``:
        ``rope.get_embed(shape=...)`` per forward)."""
        return eva_forward_tensors(model, computed.grid_size)

    def expected_forward_tensors(self, weights, spec, source, computed):
        rope = self.expected_derived_tensors(weights, spec, source, computed).get(ROPE_KEY)
        return expected_eva_forward_tensors(weights, computed.num_prefix_tokens - computed.pos_prefix_tokens, rope)

    def dynamic_reference(self, native, spec, source, computed, weights):
        """The model built at the target size (timm's static path) carrying the harness's resample, its rotary
        embedding replaced by the harness's own for the target grid; built with ``dynamic_img_pad``, at the
        padded size (whose grid ``computed`` holds) and fed inputs the harness pads."""
        kwargs = {k: v for k, v in spec.kwargs.items() if k != 'dynamic_img_pad'}
        size = padded_size(computed.img_size, computed.patch_size) if computed.img_pad else computed.img_size
        model = model_carrying(spec.name, {**kwargs, **head_kwargs(native), 'img_size': size,
                                           'dynamic_img_size': False},
                               weights)
        model = with_reference_rope(model, rope_config(native), computed.grid_size, weights)
        return PaddedInput(model.eval(), computed.patch_size) if computed.img_pad else model.eval()


def eva_forward_tensors(model: nn.Module, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """What the model's own ``_pos_embed`` adds to blank tokens of ``grid`` (where it has a ``pos_embed``) and the
    rotary embedding it returns (where it has one): ``dynamic_img_size`` resamples and builds both per forward."""
    added, rope = pos_embed_pass(model, grid)
    out = {POS_EMBED_ADDED: added} if getattr(model, 'pos_embed', None) is not None else {}
    if getattr(model, 'rope', None) is not None:
        out[ROPE_RETURNED] = rope
    return out


def expected_eva_forward_tensors(weights: dict[str, torch.Tensor], unembedded: int,
                                 rope: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """What :func:`eva_forward_tensors` must give: the harness's position embedding and rotary embedding."""
    out = expected_pos_embed_added(weights, unembedded)
    if rope is not None:
        out[ROPE_RETURNED] = rope
    return out


def with_reference_rope(model: nn.Module, config: RopeConfig | None, grid: tuple[int, int],
                        weights: dict[str, torch.Tensor]) -> nn.Module:
    """``model`` with its rotary embedding replaced by the harness's own for ``grid`` (:class:`FixedRope`)."""
    if config is not None:
        model.rope = FixedRope(rope_embedding(config, grid, weights.get(MIXED_FREQS_KEY)), grid)
    return model


def rope_config(model: nn.Module) -> RopeConfig | None:
    """The rotary embedding a model is defined with (None: it has none); UnsupportedRope for one the oracle
    does not model. Attributes a release's rope module lacks take the value that release always used."""
    rope = getattr(model, 'rope', None)
    if rope is None:
        return None
    kind = _ROPE_KINDS.get(type(rope).__name__)
    if kind is None:
        raise UnsupportedRope(f'its rotary embedding is a {type(rope).__name__}')
    if kind == 'axial' and getattr(rope, 'grid_type', 'pixel' if rope.in_pixels else 'index') != 'index':
        raise UnsupportedRope('its rotary embedding is on a pixel grid (in_pixels), not on patch indices')
    if kind == 'dinov3' and (rope.min_period is not None or rope.max_period is not None):
        raise UnsupportedRope('its DINOv3 rotary embedding sets min/max periods instead of a temperature')
    ref_grid = getattr(rope, 'ref_feat_shape', None)
    return RopeConfig(
        kind=kind, head_dim=rope.dim // rope.num_heads if kind == 'mixed' else rope.dim,
        temperature=getattr(rope, 'temperature', 10000.0),
        indexing=getattr(rope, 'grid_indexing', 'ij'), grid_offset=getattr(rope, 'grid_offset', 0.0),
        ref_grid=to_size(ref_grid) if ref_grid is not None else None,
        rotate_half=bool(getattr(model.blocks[0].attn, 'rotate_half', False)),
        normalize=getattr(rope, 'normalize_coords', 'separate'))


def rope_in_use(model: nn.Module) -> torch.Tensor:
    """The rotary embedding the model's forward pass gives its blocks at its own input size, as its own
    ``_pos_embed`` returns it (:func:`~harness.families.vit.pos_embed_pass`), so the static, cached and
    per-forward (``dynamic_img_size``) routes are each taken as the model takes them."""
    return pos_embed_pass(model, to_size(model.patch_embed.grid_size))[1]


class FixedRope(nn.Module):
    """Stands in for a model's rotary embedding: the harness's embedding for one grid, whichever way the model
    asks for it (``get_embed()`` on the static path, ``get_embed(shape=...)`` on the dynamic one)."""

    def __init__(self, embedding: torch.Tensor, grid: tuple[int, int]):
        super().__init__()
        self.register_buffer('embedding', embedding, persistent=False)
        self.feat_shape = list(grid)

    def get_embed(self, shape=None, dtype=None) -> torch.Tensor:
        if shape is not None and list(shape) != self.feat_shape:
            raise ValueError(f'the reference rope holds a {self.feat_shape} grid, asked for {list(shape)}')
        return self.embedding if dtype is None else self.embedding.to(dtype)
