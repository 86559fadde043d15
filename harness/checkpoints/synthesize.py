"""Seeded models whose weights look trained where resizing matters.

timm initialises position embeddings and relative position tables as white noise. Resampling white noise
is meaningless (any interpolation of it is as good as any other), so drift and fidelity figures computed on
it say nothing. Trained embeddings are smooth functions of position; we make them so:

* position embeddings: per channel, a sum of a few random low-frequency 2-D sinusoids over the image
  extent (coordinates normalised to [0, 1], so a rectangular grid is a stretched view of the same field);
* relative position bias tables: per head, a bump that decays with the offset plus a low-frequency ripple
  (Swin's signed-offset tables and LeViT / EfficientViT's absolute-offset ``attention_biases`` alike);
* patch-embedding kernels: per (out, in) pair, a low-frequency sinusoid over the patch (Gabor-like);
* LayerScale gammas: per channel 0.1 to 0.5, as in trained models (timm's 1e-5 init makes blocks identities);
* NaFlexVit's position tables, stored as the (H, W) grid they cover or as factorized rows and columns: smooth
  fields over their own extent, like ViT's;
* models with a rotary position embedding (:func:`_rope_trained_like`): attention peaky enough for the rotation
  to matter, and RoPE-Mixed's learned frequencies spread in magnitude and direction.
* Swin-V2's continuous position bias MLPs: steep enough that the bias varies strongly with the offset (timm
  initialises them so small that every offset gets nearly the same bias, and a wrong coordinate goes unseen);
* Swin-V2's post-norm gains (zero at init, which switches every attention and MLP branch off) and attention
  logit scales (one constant at init): trained values, so that a bug in either path cannot hide behind them.

Every other parameter gets a small seeded perturbation, so no two tensors are equal (LayerNorm weights
are not all ones): a layout writer that swaps two keys cannot pass its round-trip test by accident.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

PERTURBATION_STD = 0.02


def seeded_model(model_name: str, kwargs: dict[str, Any], seed: int) -> nn.Module:
    """A timm model at its own configuration with reproducible, trained-looking weights, in eval mode."""
    import timm
    torch.manual_seed(seed)
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    make_trained_like(model, torch.Generator().manual_seed(seed))
    return model.eval()


# blocks that normalise each branch's output (post-norm): timm starts their gains at zero
POST_NORM_BLOCKS = ('SwinTransformerV2Block', 'SwinTransformerV2CrBlock')
# continuous position bias MLPs: the attribute holding each, and how far its input coordinates reach
# (Swin-V2's are normalised to about [-1, 1], Swin-V2-CR's are ln(1 + |offset|): about 2 for windows up to 8)
POSITION_MLPS = {'cpb_mlp': 1.0, 'meta_mlp': 2.0}


@torch.no_grad()
def make_trained_like(model: nn.Module, generator: torch.Generator) -> None:
    grid = tuple(model.patch_embed.grid_size) if hasattr(getattr(model, 'patch_embed', None), 'grid_size') else None
    windows = {f'{name}.relative_position_bias_table': module.window_size for name, module in model.named_modules()
               if hasattr(module, 'relative_position_bias_table')}
    post_norms = {f'{name}.{norm}.weight' for name, module in model.named_modules()
                  if type(module).__name__ in POST_NORM_BLOCKS for norm in ('norm1', 'norm2')}
    for name, param in model.named_parameters():
        if name == 'pos_embed' and _token_grid_table(param, grid):
            _smooth_pos_embed(param, grid, generator)
        elif name.endswith('patch_embed.proj.weight') and param.shape[-2:].numel() > 1:   # not a 1x1 projection
            param.copy_(_smooth_field(param.shape[:2], param.shape[-2:], generator, max_freq=1.5)
                        * param.std().clamp_min(1e-3))
        elif name in windows:
            _smooth_rel_pos_table(param, tuple(windows[name]), generator)
        elif name in post_norms:
            _trained_gain(param, generator)
        elif name.endswith('attn.logit_scale'):
            _trained_logit_scale(param, generator)
        elif name.endswith('attention_biases') and _is_offset_table(param):
            _smooth_offset_biases(param, generator)
        elif name.startswith('embeds.pos_embed'):
            _smooth_grid_pos_embed(param, generator)
        elif name.endswith('.gamma') and param.ndim == 1:
            _trained_layer_scale(param, generator)
        else:
            param.add_(torch.randn(param.shape, generator=generator) * PERTURBATION_STD)
    for module in model.modules():
        for attribute, extent in POSITION_MLPS.items():
            if isinstance(getattr(module, attribute, None), nn.Module):
                _steep_position_mlp(getattr(module, attribute), extent, generator)
    if getattr(model, 'rope', None) is not None:
        _rope_trained_like(model, generator)


ROPE_LOGIT_STD = 5.0   # spread of a rope model's attention logits: trained attention is peaky, not uniform
LAYER_SCALES = ('gamma_1', 'gamma_2', '.gamma')   # Eva's layer-scale parameters, and timm's LayerScale


def _rope_trained_like(model: nn.Module, generator: torch.Generator) -> None:
    """A rotary embedding acts only through attention logits ``q . R(p_n - p_m) k``: with timm's initialisation
    (projections of std 0.02) the logits are near zero and attention near uniform, so any rope at all, right or
    wrong (axes swapped, a rectangular grid read as square), gives the same outputs. Trained models attend
    sharply (:func:`_peaky_attention`), what their blocks compute reaches the logits (layer scales, 1e-5 at
    init, drawn from [0.3, 0.7]; :func:`_unit_spread_logits`), and RoPE-Mixed's learned frequencies differ per
    block, head and pair (:func:`_spread_mixed_freqs`); so do these."""
    for module in model.modules():
        _peaky_attention(module, generator)
    for name, param in model.named_parameters():
        if name.endswith(LAYER_SCALES):
            param.copy_(0.3 + 0.4 * torch.rand(param.shape, generator=generator))
    freqs = getattr(model.rope, 'freqs', None)
    if isinstance(freqs, nn.Parameter):
        _spread_mixed_freqs(freqs, generator)
    _unit_spread_logits(model, generator)


def _peaky_attention(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw an attention's query and key projections so its logits spread by about ``ROPE_LOGIT_STD``: for
    unit-variance inputs of width C, weights of std ``sqrt(ROPE_LOGIT_STD / C)``; behind a q/k norm, which undoes
    any weight scale, the norms' gains ``sqrt(ROPE_LOGIT_STD)``. Anything that is not an attention is left alone."""
    projections = _query_key_weights(module)
    if projections is None:
        return
    norms = [norm for norm in (getattr(module, 'q_norm', None), getattr(module, 'k_norm', None))
             if getattr(norm, 'weight', None) is not None]
    for weight in projections:
        std = 1.0 if norms else math.sqrt(ROPE_LOGIT_STD / weight.shape[1])
        weight.copy_(torch.randn(weight.shape, generator=generator) * std)
    for norm in norms:
        norm.weight.fill_(math.sqrt(ROPE_LOGIT_STD))


def _spread_mixed_freqs(freqs: torch.Tensor, generator: torch.Generator) -> None:
    """RoPE-Mixed's ``(2, depth, heads, head_dim / 2)`` frequencies: timm initialises one rotation per head of a
    fixed ladder of magnitudes; each (block, head, pair) gets its own direction and a log-normal spread of the
    ladder's magnitude instead, so that exchanging the two axes changes every angle."""
    magnitude = freqs.norm(dim=0) * torch.exp(0.3 * torch.randn(freqs.shape[1:], generator=generator))
    direction = torch.rand(freqs.shape[1:], generator=generator) * 2 * math.pi
    freqs.copy_(torch.stack([magnitude * direction.cos(), magnitude * direction.sin()]))


def _unit_spread_logits(model: nn.Module, generator: torch.Generator) -> None:
    """Rescale the classifier so that the logits of noise images at the model's own size spread by about 1: timm
    scales its initial head by 1e-3, and pooling heads of 0.02-std weights (an attention pool) shrink the
    features further, so what the blocks compute would hardly reach the logits the checks compare."""
    head = model.get_classifier() if hasattr(model, 'get_classifier') else None
    if not isinstance(head, nn.Linear):
        return
    images = torch.randn(2, model.patch_embed.proj.in_channels, *model.patch_embed.img_size, generator=generator)
    training = model.training
    spread = model.eval()(images).std().clamp_min(1e-6)
    model.train(training)
    for param in head.parameters():
        param.div_(spread)


def _query_key_weights(attention: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Views of an attention module's query and key projection weights (fused ``qkv``, ``q_proj``/``k_proj``, or
    an attention pool's ``q``/``kv``), or None for a module that is not an attention."""
    if not hasattr(attention, 'head_dim'):
        return None
    qkv, q_proj, k_proj, q, kv = (getattr(attention, name, None) for name in ('qkv', 'q_proj', 'k_proj', 'q', 'kv'))
    if isinstance(qkv, nn.Linear):
        return qkv.weight.chunk(3)[:2]
    if isinstance(q_proj, nn.Linear) and isinstance(k_proj, nn.Linear):
        return q_proj.weight, k_proj.weight
    if isinstance(q, nn.Linear) and isinstance(kv, nn.Linear):
        return q.weight, kv.weight.chunk(2)[0]
    return None


def _token_grid_table(pos_embed: torch.Tensor, grid: tuple[int, int] | None) -> bool:
    """Whether ``pos_embed`` is a (1, prefix + H*W, C) table of the patch grid (HieraDet keeps an NCHW one, and a
    model without ``patch_embed.grid_size`` says no grid): only such a table is smoothed."""
    return grid is not None and pos_embed.dim() == 3 and pos_embed.shape[1] >= grid[0] * grid[1]


def _smooth_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], generator: torch.Generator) -> None:
    """Fill the grid part of (1, prefix + H*W, C) with a smooth field; prefix positions stay random."""
    channels = pos_embed.shape[-1]
    num_grid = grid[0] * grid[1]
    prefix = pos_embed.shape[1] - num_grid
    field = _smooth_field((channels,), grid, generator, max_freq=2.0)   # (C, H, W)
    pos_embed[0, prefix:] = field.flatten(1).T * 0.05
    pos_embed[0, :prefix] = torch.randn(prefix, channels, generator=generator) * PERTURBATION_STD


def _smooth_rel_table(table: torch.Tensor, window: tuple[int, int], generator: torch.Generator) -> None:
    """(2Wh-1)*(2Ww-1) x heads table: a decaying bump around offset 0 plus a low-frequency ripple."""
    heads = table.shape[1]
    rows, cols = 2 * window[0] - 1, 2 * window[1] - 1
    dist2 = torch.linspace(-1, 1, rows)[:, None] ** 2 + torch.linspace(-1, 1, cols)[None, :] ** 2
    width = 0.3 + torch.rand(heads, 1, 1, generator=generator)
    bump = torch.exp(-dist2 / width ** 2) * (1 + torch.rand(heads, 1, 1, generator=generator))
    ripple = _smooth_field((heads,), (rows, cols), generator, max_freq=1.0) * 0.3
    table.copy_((bump + ripple).flatten(1).T)


def _smooth_rel_pos_table(table: torch.Tensor, window: tuple[int, int], generator: torch.Generator) -> None:
    """A relative position table of any layout made smooth as :func:`_smooth_rel_table` makes Swin's: flat with
    rows after the offsets (BEiT's class-token rows, given values of the offsets' scale, per head), or per head
    ``(heads, 2h - 1, 2w - 1)`` (TensorFlow MaxViT's). A plain flat table gets exactly Swin's values."""
    offsets = (2 * window[0] - 1) * (2 * window[1] - 1)
    if table.ndim == 3:
        flat = torch.empty(offsets, table.shape[0])
        _smooth_rel_table(flat, window, generator)
        table.copy_(flat.T.reshape(table.shape))
        return
    _smooth_rel_table(table[:offsets], window, generator)
    if table.shape[0] > offsets:
        table[offsets:] = 0.5 + torch.rand(table.shape[0] - offsets, table.shape[1], generator=generator)


def _trained_gain(weight: torch.Tensor, generator: torch.Generator) -> None:
    """Post-norm gains between 0.5 and 1.5, as a trained model's are: every branch switched on."""
    weight.copy_(0.5 + torch.rand(weight.shape, generator=generator))


def _trained_logit_scale(logit_scale: torch.Tensor, generator: torch.Generator) -> None:
    """Per head, the log of a cosine-attention temperature between 5 and 50 (timm clamps it at 100)."""
    logit_scale.copy_(torch.log(5 + 45 * torch.rand(logit_scale.shape, generator=generator)))


def _steep_position_mlp(mlp: nn.Module, extent: float, generator: torch.Generator) -> None:
    """A two-layer MLP from an offset's coordinates (within ``[-extent, extent]``) to one bias per head whose
    output varies by about 2 (one standard deviation) across offsets, head by head.

    Its first layer gets random directions whose ReLU kinks fall inside the coordinates' range; its last
    layer is scaled per head against a grid of coordinates spanning that range.
    """
    first, last = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    first.weight.copy_(torch.randn(first.weight.shape, generator=generator) * 2 / extent)
    first.bias.copy_((torch.rand(first.bias.shape, generator=generator) * 2 - 1) * 2)
    last.weight.copy_(torch.randn(last.weight.shape, generator=generator))
    axis = torch.linspace(-extent, extent, 9)
    coords = torch.stack(torch.meshgrid(axis, axis, indexing='ij'), dim=-1).reshape(-1, 2)
    spread = (torch.relu(coords @ first.weight.T + first.bias) @ last.weight.T).std(dim=0)   # per head
    last.weight.mul_(2 / spread.clamp_min(1e-6)[:, None])
    if last.bias is not None:
        last.bias.copy_(torch.randn(last.bias.shape, generator=generator) * 0.5)


def _smooth_offset_biases(table: torch.Tensor, generator: torch.Generator) -> None:
    """(heads, S*S) biases by absolute offset (|dy|, |dx|), row-major (LeViT, EfficientViT): per head, a bump
    that decays with the offset's length plus a low-frequency ripple over the S x S offsets."""
    heads, area = table.shape
    side = math.isqrt(area)
    offsets = torch.arange(side, dtype=torch.float32) / max(side - 1, 1)
    dist2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
    width = 0.3 + torch.rand(heads, 1, 1, generator=generator)
    bump = torch.exp(-dist2 / width ** 2) * (1 + torch.rand(heads, 1, 1, generator=generator))
    ripple = _smooth_field((heads,), (side, side), generator, max_freq=1.0) * 0.3 if side > 1 else 0.0
    table.copy_((bump + ripple).reshape(heads, area))


def _trained_layer_scale(gamma: torch.Tensor, generator: torch.Generator) -> None:
    """LayerScale: timm initialises it at 1e-5 (or 1e-6), which makes every block nearly the identity, so a
    class-token head barely sees the patches (nor how their position embedding was resampled); trained
    models' scales are around 0.1 to 1. Per channel, uniform in [0.1, 0.5]."""
    gamma.copy_(0.1 + 0.4 * torch.rand(gamma.shape, generator=generator))


def _is_offset_table(table: torch.Tensor) -> bool:
    return table.ndim == 2 and math.isqrt(table.shape[1]) ** 2 == table.shape[1]


def _smooth_grid_pos_embed(pos_embed: torch.Tensor, generator: torch.Generator) -> None:
    """NaFlexVit's position tables, stored as the grid they cover: (1, H, W, C), or factorized (1, H, C) and
    (1, W, C); each channel a smooth field over the table's extent."""
    grid = tuple(pos_embed.shape[1:-1]) if pos_embed.ndim == 4 else (pos_embed.shape[1], 1)
    field = _smooth_field((pos_embed.shape[-1],), grid, generator, max_freq=2.0)   # (C, *grid)
    pos_embed.copy_(field.permute(1, 2, 0).reshape(pos_embed.shape) * 0.05)


def _smooth_field(batch_shape: tuple[int, ...], size: tuple[int, int], generator: torch.Generator,
                  max_freq: float, terms: int = 3) -> torch.Tensor:
    """Unit-variance sums of ``terms`` random 2-D sinusoids with at most ``max_freq`` cycles per side."""
    h, w = size
    y = (torch.arange(h) + 0.5) / h
    x = (torch.arange(w) + 0.5) / w
    shape = (*batch_shape, terms, 1, 1)
    fy = (torch.rand(shape, generator=generator) * 2 - 1) * max_freq
    fx = (torch.rand(shape, generator=generator) * 2 - 1) * max_freq
    phase = torch.rand(shape, generator=generator) * 2 * math.pi
    amp = torch.randn(shape, generator=generator)
    waves = amp * torch.sin(2 * math.pi * (fy * y[:, None] + fx * x[None, :]) + phase)
    field = waves.sum(dim=-3)
    return field / field.flatten(-2).std(dim=-1).clamp_min(1e-6)[..., None, None]
