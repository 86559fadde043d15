"""Round trips through every layout writer: seeded tiny model -> the origin's file -> timm's real loader.

Each case checks that (a) timm recovers exactly the state dict the writer says it must, (b) the loaded
model computes exactly what the source computes once the source carries that state dict, (c) the file has
the origin's layout (wrapper keys, names, orientations), so a writer falling back to timm's layout fails,
and (d) the writer's state dict departs from the source's only where the layout forces it.

Every comparison is exact: each layout transform is a transpose, reshape or split, and where timm computes
a value (CLIP's zero head bias, a DINOv2 register model's cls_token) the writer returns timm's own result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

from harness.checkpoints.origins import LayoutError, origin_named
from harness.checkpoints.synthesize import seeded_model

CLIP = 'vit_base_patch16_clip_224', dict(embed_dim=64, depth=2, num_heads=2, img_size=64)
DINO = dict(embed_dim=64, depth=2, num_heads=2, img_size=56)
TINY = 'vit_tiny_patch16_224', dict(depth=2, img_size=64)
# window 4 at 128 px keeps every stage even (the original repo's merge asserts it) and gives shifted blocks
SWIN = 'swin_tiny_patch4_window7_224', dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                                            window_size=4, img_size=128)
NAFLEX = dict(embed_dim=32, depth=1, num_heads=2, img_size=64, pos_embed_grid_size=(4, 4))
FileKey = str | tuple[str, ...]   # a key of the file, or keys into its nested dicts


@dataclass(frozen=True)
class Case:
    origin: str
    model: str
    kwargs: dict[str, Any]
    shapes: dict[FileKey, tuple[int, ...]]             # spot checks of the layout: what the file holds, and its shape
    absent: tuple[FileKey, ...] = ()                   # what a file of this layout never holds (timm's own names)
    wrapper: tuple[str, ...] = ()                    # the file's exact top-level keys, for wrapped checkpoints
    forced: dict[str, str] = field(default_factory=dict)   # timm key -> 'zeros' | 'rounded': where it departs

    def __str__(self) -> str:
        return f'{self.origin}-{self.model}-{self.kwargs["img_size"]}'


CASES = [
    Case('timm', *TINY, shapes={'cls_token': (1, 1, 192), 'blocks.1.attn.qkv.weight': (576, 192)}),
    Case('timm', TINY[0], {**TINY[1], 'img_size': [32, 64]}, shapes={'pos_embed': (1, 9, 192)}),
    Case('timm', *SWIN, shapes={'layers.1.downsample.reduction.weight': (64, 128), 'head.fc.weight': (1000, 256)},
         absent=('layers.0.downsample.reduction.weight', 'head.weight')),
    Case('openai_clip', *CLIP,
         shapes={'visual.class_embedding': (64,), 'visual.positional_embedding': (17, 64),
                 'visual.conv1.weight': (64, 3, 16, 16), 'visual.ln_pre.weight': (64,), 'visual.proj': (64, 1000),
                 'visual.transformer.resblocks.1.attn.in_proj_weight': (192, 64),
                 'visual.transformer.resblocks.1.mlp.c_proj.weight': (64, 256),
                 'transformer.resblocks.0.attn.in_proj_weight': (96, 32), 'logit_scale': (), 'input_resolution': ()},
         absent=('cls_token', 'visual.cls_token', 'visual.head.bias', 'state_dict'), forced={'head.bias': 'zeros'}),
    Case('open_clip', *CLIP,
         shapes={('state_dict', 'module.visual.class_embedding'): (64,),
                 ('state_dict', 'module.visual.proj'): (64, 1000),
                 ('state_dict', 'module.visual.transformer.resblocks.0.ln_1.weight'): (64,),
                 ('state_dict', 'module.token_embedding.weight'): (1000, 32), ('state_dict', 'module.logit_scale'): ()},
         absent=(('state_dict', 'visual.proj'), ('state_dict', 'module.visual.head.bias')),
         wrapper=('epoch', 'name', 'state_dict', 'optimizer'), forced={'head.bias': 'zeros'}),
    Case('dinov2', 'vit_small_patch14_dinov2', DINO,
         shapes={'mask_token': (1, 64), 'pos_embed': (1, 17, 64), 'blocks.1.ls2.gamma': (64,)}),
    Case('dinov2', 'vit_small_patch14_reg4_dinov2', DINO,
         shapes={'register_tokens': (1, 4, 64), 'pos_embed': (1, 17, 64), 'mask_token': (1, 64)},
         absent=('reg_token',), forced={'cls_token': 'rounded'}),
    Case('dinov2', 'vit_giant_patch14_dinov2', {**DINO, 'embed_dim': 48},
         shapes={'blocks.0.mlp.w12.weight': (256, 48), 'blocks.1.mlp.w3.weight': (48, 128)},
         absent=('blocks.0.mlp.fc1.weight',)),
    Case('big_vision', *TINY,
         shapes={'embedding/kernel': (16, 16, 3, 192), 'cls': (1, 1, 192),
                 'Transformer/posembed_input/pos_embedding': (1, 17, 192),
                 'Transformer/encoderblock_1/LayerNorm_2/scale': (192,),
                 'Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel': (192, 3, 64),
                 'Transformer/encoderblock_1/MultiHeadDotProductAttention_1/value/bias': (3, 64),
                 'Transformer/encoderblock_1/MultiHeadDotProductAttention_1/out/kernel': (3, 64, 192),
                 'Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel': (192, 768), 'head/kernel': (192, 1000)},
         absent=('cls_token', 'Transformer/encoderblock/LayerNorm_0/scale')),
    Case('classic_vit', 'naflexvit_base_patch16_gap', NAFLEX,
         shapes={'pos_embed': (1, 16, 32), 'patch_embed.proj.weight': (32, 3, 16, 16), 'reg_token': (1, 4, 32)},
         absent=('embeds.pos_embed', 'embeds.proj.weight')),
    Case('classic_vit', 'naflexvit_base_patch16_gap', {**NAFLEX, 'reg_tokens': 0, 'class_token': True},
         shapes={'pos_embed': (1, 17, 32), 'cls_token': (1, 1, 32)}, forced={'embeds.cls_token': 'rounded'}),
    Case('microsoft', *SWIN,
         shapes={('model', 'layers.0.downsample.reduction.weight'): (64, 128), ('model', 'head.weight'): (1000, 256),
                 ('model', 'layers.0.blocks.0.attn.relative_position_index'): (16, 16),
                 ('model', 'layers.2.blocks.1.attn_mask'): (4, 16, 16)},
         absent=(('model', 'layers.3.downsample.reduction.weight'), ('model', 'head.fc.weight')), wrapper=('model',)),
]


def _read(path: Path) -> dict[str, Any]:
    if path.suffix == '.safetensors':
        return load_file(str(path))
    if path.suffix == '.npz':
        with np.load(path, allow_pickle=False) as npz:
            return dict(npz)
    return torch.load(path, map_location='cpu', weights_only=True)


def _lookup(file: dict[str, Any], path: FileKey) -> Any:
    for key in (path,) if isinstance(path, str) else path:
        if not isinstance(file, dict) or key not in file:
            return None
        file = file[key]
    return file


def _load(case: Case, path: Path, num_classes: int) -> torch.nn.Module:
    """The case's model built by timm from the file, the way the harness's build stage asks for it."""
    size = case.kwargs['img_size']
    height, width = (size, size) if isinstance(size, int) else size
    overlay = dict(file=str(path), num_classes=num_classes, custom_load=origin_named(case.origin).custom_load,
                   input_size=(3, height, width))
    return timm.create_model(case.model, pretrained=True, pretrained_cfg_overlay=overlay, **case.kwargs).eval()


@pytest.mark.parametrize('case', CASES, ids=str)
@torch.no_grad()
def test_round_trip(case: Case, tmp_path: Path):
    source = seeded_model(case.model, case.kwargs, seed=0)
    path = tmp_path / origin_named(case.origin).filename
    expected = origin_named(case.origin).write(source, path)

    file = _read(path)                                                                       # (c)
    if case.wrapper:
        assert sorted(file) == sorted(case.wrapper)
    for key, shape in case.shapes.items():
        assert _lookup(file, key) is not None, f'{key} missing from the {case.origin} file'
        assert tuple(_lookup(file, key).shape) == shape, key
    assert [key for key in case.absent if _lookup(file, key) is not None] == []

    loaded = _load(case, path, source.num_classes)
    recovered = loaded.state_dict()                                                          # (a)
    assert recovered.keys() == expected.keys()
    assert [k for k in expected if not torch.equal(recovered[k], expected[k])] == []

    original = source.state_dict()                                                           # (d)
    assert expected.keys() == original.keys()
    assert {k for k in expected if not torch.equal(expected[k], original[k])} <= case.forced.keys()
    for key, how in case.forced.items():
        if how == 'zeros':
            assert not expected[key].any()
        else:
            torch.testing.assert_close(expected[key], original[key], rtol=0, atol=1e-6)

    source.load_state_dict(expected)                                                         # (b)
    x = torch.randn((2, 3, *loaded.pretrained_cfg['input_size'][1:]), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x), source(x))


@pytest.mark.parametrize('origin, model, kwargs, match', [
    ('openai_clip', *TINY, r'no place for patch_embed\.proj\.bias.*holds visual\.ln_pre\.weight'),
    ('open_clip', CLIP[0], {**CLIP[1], 'init_values': 1e-5}, r'no place for blocks\.N\.ls1\.gamma, blocks\.N\.ls2'),
    ('openai_clip', CLIP[0], {**CLIP[1], 'img_size': (64, 96)}, 'square'),
    ('openai_clip', *SWIN, 'VisionTransformer'),
    ('big_vision', *CLIP, r'no place for norm_pre\.weight.*holds embedding/bias'),
    ('big_vision', 'vit_small_patch14_reg4_dinov2', DINO, 'covers the class token'),
    ('dinov2', *TINY, r'no place for head\.weight, head\.bias.*holds blocks\.N\.ls1\.gamma'),
    ('microsoft', *TINY, 'SwinTransformer'),
])
def test_layout_error(origin: str, model: str, kwargs: dict, match: str, tmp_path: Path):
    with pytest.raises(LayoutError, match=match):
        origin_named(origin).write(timm.create_model(model, **kwargs), tmp_path / origin_named(origin).filename)
    assert list(tmp_path.iterdir()) == []


@torch.no_grad()
def test_swin_patch_merging_concatenates_in_the_original_order():
    """The original repo concatenates x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2] (rows, cols);
    timm's reshape/permute must produce the same channel order, or microsoft_layout would have to permute
    ``reduction`` and ``norm``."""
    from timm.models.swin_transformer import PatchMerging
    torch.manual_seed(0)
    merge = PatchMerging(dim=8).eval()
    merge.norm.weight.normal_()
    merge.norm.bias.normal_()
    x = torch.randn(2, 6, 4, 8)
    original = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    torch.testing.assert_close(merge(x), merge.reduction(merge.norm(original)), rtol=0, atol=0)
