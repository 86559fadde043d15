"""What timm does with the ViT trigger sets' cases (matrices/zoo.yaml, zoo-small.yaml), without the harness: run
with the timm release to test first on the path, e.g. ``PYTHONPATH=~/.cache/timm-harness/timm/1.0.8 python
<this file> [model]`` (model: vit_tiny_patch16_224, the default; the hybrid vit_tiny_r_s16_p8_224; the Eva
models vit_small_patch16_rope_mixed_ape_224 and vit_pe_core_tiny_patch16_384 of zoo-eva.yaml).

A tiny checkpoint trained at 64x96 (a 4x6 grid for the ViT, 2x3 for the hybrid) is loaded at its transpose
96x64 (the same token count) and at 96x96; a ViT built with ``dynamic_img_pad`` at 72x84 (4.5 x 5.25 patches).
Each line says what a correct timm does and what this one did.
"""
import sys
import tempfile

import timm
import torch

ARGS = dict(embed_dim=32, depth=1, num_heads=2)
MODEL = sys.argv[1] if len(sys.argv) > 1 else 'vit_tiny_patch16_224'


def pretrained(img_size, path, **kwargs):
    """The checkpoint as its pretrained config describes it: trained at 64x96, a .pth file."""
    overlay = dict(file=path, custom_load=False, input_size=(3, 64, 96))
    return timm.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=overlay,
                             img_size=img_size, **ARGS, **kwargs).eval()


def attempt(what, fn):
    try:
        return fn()
    except Exception as e:   # noqa: BLE001 - what timm raises is the finding
        print(f'{what}: raised {type(e).__name__}: {str(e)[:160]}')
        return None


def main():
    print('timm', timm.__version__, MODEL)
    torch.manual_seed(0)
    source = timm.create_model(MODEL, img_size=(64, 96), **ARGS).eval()
    with torch.no_grad():
        source.pos_embed.normal_()
    path = tempfile.mktemp(suffix='.pth')
    torch.save(source.state_dict(), path)
    h, w = source.patch_embed.grid_size
    prefix = source.pos_embed.shape[1] - h * w   # class token positions, if the table has them
    grid = source.pos_embed[:, prefix:].reshape(1, h, w, -1).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(grid, size=(w, h), mode='bicubic', antialias=True)
    want = want.flatten(2).transpose(1, 2)

    model = attempt('create 64x96 -> 96x64', lambda: pretrained((96, 64), path))
    if model is not None:
        diff = (model.pos_embed[:, prefix:] - want).abs().max()
        print(f'create 64x96 -> 96x64: pos_embed {"resampled" if diff < 1e-4 else f"NOT resampled to {w}x{h}"}'
              f' (max diff to a {h}x{w} -> {w}x{h} bicubic resample {diff:.3f})')
    attempt('create 64x96 -> 96x96', lambda: print('create 64x96 -> 96x96: loads, pos_embed',
                                                   tuple(pretrained(96, path).pos_embed.shape)))
    if hasattr(source, 'set_input_size'):
        model = pretrained((64, 96), path)
        model.set_input_size(img_size=(96, 64))
        print(f'set_input_size 64x96 -> 96x64: max diff to a {h}x{w} -> {w}x{h} bicubic resample '
              f'{(model.pos_embed[:, prefix:] - want).abs().max():.3f}')
    dynamic = pretrained((64, 96), path, dynamic_img_size=True)
    def features():
        shape = tuple(dynamic.forward_features(torch.randn(1, 3, 96, 96)).shape)
        print('dynamic 64x96 source at 96x96: features', shape)
    attempt('dynamic 64x96 source at 96x96', features)

    if MODEL != 'vit_tiny_patch16_224':
        return
    padded = timm.create_model('vit_tiny_patch16_224', img_size=(72, 84), dynamic_img_pad=True, **ARGS).eval()
    print(f'create dynamic_img_pad at 72x84: grid_size {padded.patch_embed.grid_size} (the forward pads to 5x6), '
          f'pos_embed {tuple(padded.pos_embed.shape)}')
    attempt('create dynamic_img_pad at 72x84', lambda: print('create dynamic_img_pad at 72x84: forward OK',
                                                             tuple(padded(torch.randn(1, 3, 72, 84)).shape)))


if __name__ == '__main__':
    main()
