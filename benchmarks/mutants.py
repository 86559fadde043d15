"""Mutants of timm's resize code: plausible mistakes a timm contributor could make, as source patches.

Each mutant replaces one exact snippet (``find``, which must occur exactly once in the file of the installed
release) by ``replace``. ``file`` is relative to the timm package. When a new timm release moves or rewrites a
snippet, ``apply`` raises naming the mutant and the file, so the mutants that need rewriting are known before
anything runs (``python benchmarks/mutation_score.py --check``).

Written against timm 1.0.31. To add one: copy a snippet from the installed release (enough lines to be unique),
write the mistake, say in one line what it gets wrong, and give it one of the areas in ``AREAS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AREAS = (
    'pos-embed',        # timm/layers/pos_embed.py: resample_abs_pos_embed
    'patch-embed',      # timm/layers/patch_embed.py: FlexiViT kernel resampling
    'dynamic-pad',      # timm/layers/patch_embed.py: dynamic_img_pad
    'rel-pos',          # relative-position tables, indices and MLP biases (pos_embed_rel.py, beit.py, ...)
    'rope',             # timm/layers/pos_embed_sincos.py: rotary embeddings
    'swin-window',      # swin_transformer.py: windows, shifts, attention masks
    'swin-v2-cpb',      # swin_transformer_v2*.py: continuous position bias coordinates
    'checkpoint-filter',  # each family's checkpoint_filter_fn
    'dynamic-forward',  # what dynamic_img_size computes per forward (_pos_embed and kin)
)


class MutantMismatch(RuntimeError):
    """A mutant's snippet does not occur exactly once in the timm it is applied to: rewrite the mutant."""


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str           # relative to the timm package, e.g. 'layers/pos_embed.py'
    find: str           # exact source text, occurring exactly once in timm 1.0.31's file
    replace: str
    description: str    # one line: the mistake
    area: str

    def apply(self, package: Path) -> None:
        """Patch the timm package at ``package`` (a copy: the folder holding ``__init__.py``) in place."""
        path = package / self.file
        text = path.read_text()
        found = text.count(self.find)
        if found != 1:
            raise MutantMismatch(f'mutant {self.id}: its find snippet occurs {found} times in timm/{self.file} '
                                 f'(expected exactly once): rewrite it for this release')
        path.write_text(text.replace(self.find, self.replace))


MUTANTS: list[Mutant] = [
    # --- pos-embed: resample_abs_pos_embed ---------------------------------------------------------------------
    Mutant('posembed-bilinear', 'layers/pos_embed.py',
           "num_prefix_tokens: int = 1,\n        interpolation: str = 'bicubic',",
           "num_prefix_tokens: int = 1,\n        interpolation: str = 'bilinear',",
           'resample_abs_pos_embed defaults to bilinear (set_input_size and dynamic use the default)', 'pos-embed'),
    Mutant('posembed-no-antialias', 'layers/pos_embed.py',
           'mode=interpolation, align_corners=align_corners, antialias=antialias)',
           'mode=interpolation, align_corners=align_corners, antialias=False)',
           'position embeddings downsampled without antialiasing', 'pos-embed'),
    Mutant('posembed-skip-equal-count', 'layers/pos_embed.py',
           'if old_size is not None and old_size[0] == new_size[0] and old_size[1] == new_size[1]:',
           'if old_size is not None and old_size[0] * old_size[1] == new_size[0] * new_size[1]:',
           'resample skipped when the token count is unchanged (a grid loaded into its transpose)', 'pos-embed'),
    Mutant('posembed-source-hw-swapped', 'layers/pos_embed.py',
           'posemb = posemb.reshape(1, old_size[0], old_size[1], -1).permute(0, 3, 1, 2)',
           'posemb = posemb.reshape(1, old_size[1], old_size[0], -1).permute(0, 3, 1, 2)',
           'a non-square source grid read with H and W swapped', 'pos-embed'),
    Mutant('posembed-half-precision', 'layers/pos_embed.py',
           'posemb = posemb.float()  # interpolate needs float32',
           'posemb = posemb.half().float()  # interpolate needs float32',
           'the table rounded through float16 before it is interpolated (a half-precision fast path)', 'pos-embed'),

    # --- patch-embed: FlexiViT kernel resampling ------------------------------------------------------------------
    Mutant('patchembed-bilinear', 'layers/patch_embed.py',
           "        new_size: List[int],\n        interpolation: str = 'bicubic',\n        antialias: bool = True,\n"
           "        verbose: bool = False,\n):\n    \"\"\" Standalone function (computes matrix on each call). \"\"\"",
           "        new_size: List[int],\n        interpolation: str = 'bilinear',\n        antialias: bool = True,\n"
           "        verbose: bool = False,\n):\n    \"\"\" Standalone function (computes matrix on each call). \"\"\"",
           'resample_patch_embed defaults to bilinear (PatchEmbed.set_input_size uses the default)', 'patch-embed'),
    Mutant('patchembed-no-antialias', 'layers/patch_embed.py',
           '        mode=interpolation,\n        antialias=antialias,\n        align_corners=False\n    )',
           '        mode=interpolation,\n        antialias=False,\n        align_corners=False\n    )',
           'the pseudo-inverse resize basis built without antialiasing', 'patch-embed'),
    Mutant('patchembed-kernel-transposed', 'layers/patch_embed.py',
           'resize_matrix = resized_basis_vectors_batch.squeeze(1).permute(1, 2, 0).reshape(new_total, old_total)',
           'resize_matrix = resized_basis_vectors_batch.squeeze(1).permute(2, 1, 0).reshape(new_total, old_total)',
           'resize matrix rows in W, H order: every resampled kernel comes out transposed', 'patch-embed'),
    Mutant('dynpad-wrong-side', 'layers/patch_embed.py',
           'x = F.pad(x, (0, pad_w, 0, pad_h))',
           'x = F.pad(x, (pad_w, 0, pad_h, 0))',
           'dynamic_img_pad pads on the left and top instead of the right and bottom', 'dynamic-pad'),
    Mutant('dynpad-floor-grid', 'layers/patch_embed.py',
           'return math.ceil(img_size[0] / self.patch_size[0]), math.ceil(img_size[1] / self.patch_size[1])',
           'return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]',
           'dynamic_feat_size rounds down with dynamic_img_pad (the padded row and column get no position)',
           'dynamic-pad'),

    # --- rel-pos: tables, indices, MLP biases ---------------------------------------------------------------------
    Mutant('reltable-progression-off-by-one', 'layers/pos_embed_rel.py',
           'cur += q ** (i + 1)',
           'cur += q ** i',
           'resize_rel_pos_bias_table: geometric source offsets one power short', 'rel-pos'),
    Mutant('reltable-target-hw-swapped', 'layers/pos_embed_rel.py',
           'ty = dst_size[0] // 2.0\n        tx = dst_size[1] // 2.0',
           'ty = dst_size[1] // 2.0\n        tx = dst_size[0] // 2.0',
           'resize_rel_pos_bias_table: a non-square target window sampled with H and W swapped', 'rel-pos'),
    Mutant('logcoords-sign-dropped', 'layers/pos_embed_rel.py',
           "        # mode == 'cr'\n        relative_coords_table = torch.sign(relative_coords_table) * torch.log(\n"
           '            1.0 + relative_coords_table.abs())',
           "        # mode == 'cr'\n        relative_coords_table = torch.log(\n"
           '            1.0 + relative_coords_table.abs())',
           "gen_relative_log_coords ('cr', every registered RelPosMlp) drops the sign: left and right offsets alike",
           'rel-pos'),
    Mutant('relmlp-prefix-pad-wrong-side', 'layers/pos_embed_rel.py',
           'F.pad(relative_position_bias, [self.prefix_tokens, 0, self.prefix_tokens, 0])',
           'F.pad(relative_position_bias, [0, self.prefix_tokens, 0, self.prefix_tokens])',
           "RelPosMlp pads the class token's zero bias after the patches instead of before", 'rel-pos'),
    Mutant('beit-cls-rows-swapped', 'models/beit.py',
           'relative_position_index[0, 0:] = num_relative_distance - 3\n'
           '    relative_position_index[0:, 0] = num_relative_distance - 2',
           'relative_position_index[0, 0:] = num_relative_distance - 2\n'
           '    relative_position_index[0:, 0] = num_relative_distance - 3',
           "BEiT's cls-to-token and token-to-cls table rows swapped", 'rel-pos'),
    Mutant('levit-table-bilinear', 'layers/pos_embed_rel.py',
           'size=(S2, S2),\n            mode=interpolation,',
           "size=(S2, S2),\n            mode='bilinear',",
           'EfficientViT-MSRA (LeViT) offset tables resized bilinear instead of bicubic', 'rel-pos'),

    # --- rope -----------------------------------------------------------------------------------------------------
    Mutant('rope-ref-scale-inverted', 'layers/pos_embed_sincos.py',
           't = [x / f * r for x, f, r in zip(t, feat_shape, ref_feat_shape)]',
           't = [x / r * f for x, f, r in zip(t, feat_shape, ref_feat_shape)]',
           'ref_feat_shape rescale inverted (positions stretched away from the pretraining grid)', 'rope'),
    Mutant('rope-meshgrid-ij', 'layers/pos_embed_sincos.py',
           'grid = torch.stack(torch.meshgrid(t, indexing=grid_indexing), dim=-1).to(dtype=dtype)',
           "grid = torch.stack(torch.meshgrid(t, indexing='ij'), dim=-1).to(dtype=dtype)",
           "_build_grid meshes 'xy' grids with indexing='ij' (the grid comes out transposed)", 'rope'),
    Mutant('rope-update-skip-equal-count', 'layers/pos_embed_sincos.py',
           'if self.feat_shape is not None and feat_shape != self.feat_shape:\n'
           '            bands = self._compute_bands(device=self.bands.device)',
           'if self.feat_shape is not None and feat_shape[0] * feat_shape[1] != '
           'self.feat_shape[0] * self.feat_shape[1]:\n'
           '            bands = self._compute_bands(device=self.bands.device)',
           'update_feat_shape keeps the cached rope when the token count is unchanged (a transposed grid)', 'rope'),
    Mutant('rope-centered-denominator-max', 'layers/pos_embed_sincos.py',
           'denom = [float(s) for s in feat_shape]',
           'denom = [float(max(feat_shape)) for _ in feat_shape]',
           "'centered' (DINOv3) coordinates normalised by the longer side on both axes", 'rope'),

    # --- swin windows, shifts, masks ------------------------------------------------------------------------------
    Mutant('swin-shift-not-reset', 'models/swin_transformer.py',
           'shift_size = [0 if r <= w else s for r, w, s in zip(self.input_resolution, window_size, '
           'target_shift_size)]',
           'shift_size = list(target_shift_size)',
           'the shift is kept when the window covers the whole feature map', 'swin-window'),
    Mutant('swin-window-not-clamped', 'models/swin_transformer.py',
           'window_size = [r if r <= w else w for r, w in zip(self.input_resolution, target_window_size)]',
           'window_size = list(target_window_size)',
           'the window is not clamped to a feature map smaller than it (padded windows instead)', 'swin-window'),
    Mutant('swin-mask-rows-use-width', 'models/swin_transformer.py',
           '(0, -self.window_size[0]),\n                    (-self.window_size[0], -self.shift_size[0]),\n'
           '                    (-self.shift_size[0], None),',
           '(0, -self.window_size[1]),\n                    (-self.window_size[1], -self.shift_size[1]),\n'
           '                    (-self.shift_size[1], None),',
           "the attention mask's row regions copied from the column code (non-square windows)", 'swin-window'),
    Mutant('swin-roll-hw-swapped', 'models/swin_transformer.py',
           'shifted_x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))',
           'shifted_x = torch.roll(x, shifts=(-self.shift_size[1], -self.shift_size[0]), dims=(1, 2))',
           'the cyclic shift rolls H by the width shift and W by the height shift', 'swin-window'),

    # --- swin v2 continuous position bias -------------------------------------------------------------------------
    Mutant('swinv2-pretrained-window-ignored', 'models/swin_transformer_v2.py',
           'relative_coords_table[:, :, :, 0] /= max(self.pretrained_window_size[0] - 1, 1)\n'
           '            relative_coords_table[:, :, :, 1] /= max(self.pretrained_window_size[1] - 1, 1)',
           'relative_coords_table[:, :, :, 0] /= max(self.window_size[0] - 1, 1)\n'
           '            relative_coords_table[:, :, :, 1] /= max(self.window_size[1] - 1, 1)',
           'CPB coordinates normalised by the current window, not the pretraining window', 'swin-v2-cpb'),
    Mutant('swinv2-coords-hw-swapped', 'models/swin_transformer_v2.py',
           'relative_coords_table[:, :, :, 0] /= max(self.window_size[0] - 1, 1)\n'
           '            relative_coords_table[:, :, :, 1] /= max(self.window_size[1] - 1, 1)',
           'relative_coords_table[:, :, :, 0] /= max(self.window_size[1] - 1, 1)\n'
           '            relative_coords_table[:, :, :, 1] /= max(self.window_size[0] - 1, 1)',
           'CPB coordinates of a non-square window normalised with H and W swapped', 'swin-v2-cpb'),
    Mutant('swinv2cr-coords-sign-flipped', 'models/swin_transformer_v2_cr.py',
           'relative_coordinates = coordinates[:, :, None] - coordinates[:, None, :]',
           'relative_coordinates = coordinates[:, None, :] - coordinates[:, :, None]',
           'Swin-V2-CR relative coordinates key minus query instead of query minus key', 'swin-v2-cpb'),
    Mutant('swinv2cr-shift-not-rescaled', 'models/swin_transformer_v2_cr.py',
           '            target_shift_size = (target_window_size[0] // 2, target_window_size[1] // 2)\n\n'
           '        if self.always_partition:',
           '            target_shift_size = target_shift_size\n\n        if self.always_partition:',
           "Swin-V2-CR keeps the old shift after a window change instead of half the new window", 'swin-window'),

    # --- checkpoint filters ---------------------------------------------------------------------------------------
    Mutant('vit-filter-prefix-ignored', 'models/vision_transformer.py',
           "            num_prefix_tokens = 0 if getattr(model, 'no_embed_class', False) else "
           "getattr(model, 'num_prefix_tokens', 1)\n            old_size = get_pretrained_grid_size(",
           "            num_prefix_tokens = 0 if getattr(model, 'no_embed_class', False) else 1\n"
           "            old_size = get_pretrained_grid_size(",
           "ViT's filter assumes one prefix token (a distillation token is resampled as a patch)",
           'checkpoint-filter'),
    Mutant('vit-filter-skip-equal-count', 'models/vision_transformer.py',
           '            if v.shape[1] != model.pos_embed.shape[1] or (\n'
           '                old_size is not None and old_size != model.patch_embed.grid_size\n'
           '            ):\n                v = resample_abs_pos_embed(\n                    v,\n'
           '                    new_size=model.patch_embed.grid_size,\n                    old_size=old_size,\n'
           '                    num_prefix_tokens=num_prefix_tokens,\n'
           '                    interpolation=interpolation,\n'
           '                    antialias=antialias,\n                    verbose=True,\n'
           '                    align_corners=align_corners,',
           '            if v.shape[1] != model.pos_embed.shape[1]:\n                v = resample_abs_pos_embed(\n'
           '                    v,\n                    new_size=model.patch_embed.grid_size,\n'
           '                    old_size=old_size,\n                    num_prefix_tokens=num_prefix_tokens,\n'
           '                    interpolation=interpolation,\n                    antialias=antialias,\n'
           '                    verbose=True,\n                    align_corners=align_corners,',
           "ViT's filter resamples pos_embed only when the token count changes (not into a transposed grid)",
           'checkpoint-filter'),
    Mutant('eva-filter-skip-equal-count', 'models/eva.py',
           '            if v.shape[1] != model.pos_embed.shape[1] or (\n'
           '                old_size is not None and old_size != model.patch_embed.grid_size\n            ):',
           '            if v.shape[1] != model.pos_embed.shape[1]:',
           "EVA's filter resamples pos_embed only when the token count changes (not into a transposed grid)",
           'checkpoint-filter'),
    Mutant('beit-filter-kernel-no-antialias', 'models/beit.py',
           '                    interpolation=interpolation,\n                    antialias=antialias,\n'
           '                    verbose=True,\n                )\n'
           "        elif k == 'pos_embed' and v.shape[1] != model.pos_embed.shape[1]:",
           '                    interpolation=interpolation,\n                    antialias=False,\n'
           '                    verbose=True,\n                )\n'
           "        elif k == 'pos_embed' and v.shape[1] != model.pos_embed.shape[1]:",
           "BEiT's filter resamples the patch kernel without antialiasing", 'checkpoint-filter'),
    Mutant('swin-filter-kernel-bilinear', 'models/swin_transformer.py',
           "                    (H, W),\n                    interpolation='bicubic',",
           "                    (H, W),\n                    interpolation='bilinear',",
           "Swin's filter resamples the patch kernel bilinear", 'checkpoint-filter'),
    Mutant('naflex-filter-kernel-order', 'models/naflexvit.py',
           'v = v.permute(0, 2, 3, 1).flatten(1)',
           'v = v.flatten(1)',
           "NaFlexVit's filter flattens a conv kernel channels-first for its (patch, channel) linear layer",
           'checkpoint-filter'),

    # --- dynamic forward ------------------------------------------------------------------------------------------
    Mutant('vit-dynamic-hw-swapped', 'models/vision_transformer.py',
           '                new_size=(H, W),\n                old_size=prev_grid_size,',
           '                new_size=(W, H),\n                old_size=prev_grid_size,',
           "ViT's dynamic _pos_embed resamples to a W x H grid", 'dynamic-forward'),
    Mutant('vit-dynamic-prefix-ignored', 'models/vision_transformer.py',
           '                num_prefix_tokens=0 if self.no_embed_class else self.num_prefix_tokens,\n'
           '            )\n            x = x.view(B, -1, C)',
           '                num_prefix_tokens=0 if self.no_embed_class else 1,\n'
           '            )\n            x = x.view(B, -1, C)',
           "ViT's dynamic _pos_embed assumes one prefix token", 'dynamic-forward'),
    Mutant('eva-dynamic-rope-hw-swapped', 'models/eva.py',
           'rot_pos_embed = self.rope.get_embed(shape=(H, W)) if self.rope is not None else None',
           'rot_pos_embed = self.rope.get_embed(shape=(W, H)) if self.rope is not None else None',
           "EVA's dynamic _pos_embed builds the rope for a W x H grid", 'dynamic-forward'),
    Mutant('naflex-align-corners-dropped', 'models/naflexvit.py',
           '                    align_corners=self.pos_embed_align_corners,\n'
           '                    antialias=self.pos_embed_antialias,\n                )[:, :, :size[0], :size[1]]',
           '                    align_corners=False,\n'
           '                    antialias=self.pos_embed_antialias,\n                )[:, :, :size[0], :size[1]]',
           "NaFlexVit's per-batch resample ignores pos_embed_align_corners", 'dynamic-forward'),
]
