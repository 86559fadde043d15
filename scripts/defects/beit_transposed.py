"""What timm's BEiT loader does with a checkpoint trained on a rectangular grid (matrices/zoo-relpos.yaml), without
the harness: run with the timm release to test first on the path, e.g.
``PYTHONPATH=~/.cache/timm-harness/timm/1.0.8 python <this file>``.

A tiny BEiT trained at 64x96 (a 4x6 grid: a per-block table of 7 x 11 offsets + 3 class rows = 80 rows) is
loaded at its transpose 96x64 (6x4: 11 x 7 offsets, also 80 rows) and at 96x96 (11 x 11 + 3 = 124 rows).
"""
import tempfile

import timm
import torch

ARGS = dict(embed_dim=32, depth=1, num_heads=2)
KEY = 'blocks.0.attn.relative_position_bias_table'


def main():
    print('timm', timm.__version__)
    torch.manual_seed(0)
    source = timm.create_model('beit_base_patch16_224', img_size=(64, 96), **ARGS).eval()
    with torch.no_grad():
        source.blocks[0].attn.relative_position_bias_table.normal_()
    path = tempfile.mktemp(suffix='.pth')
    torch.save(source.state_dict(), path)
    table = source.state_dict()[KEY]
    # a correct resample of the 7x11 offsets to 11x7 (bicubic, per head), class rows kept
    grid = table[:-3].reshape(7, 11, -1).permute(2, 0, 1)[None]
    want = torch.nn.functional.interpolate(grid, size=(11, 7), mode='bicubic', align_corners=False)[0]
    want = want.permute(1, 2, 0).reshape(-1, table.shape[-1])
    overlay = dict(file=path, custom_load=False, input_size=(3, 64, 96))
    for size in ((64, 96), (96, 64), (96, 96)):
        try:
            model = timm.create_model('beit_base_patch16_224', pretrained=True, pretrained_cfg_overlay=overlay,
                                      img_size=size, **ARGS).eval()
        except Exception as e:   # noqa: BLE001 - what timm raises is the finding
            print(f'create 64x96 -> {size[0]}x{size[1]}: raised {type(e).__name__}: {str(e)[:160]}')
            continue
        loaded = model.state_dict()[KEY]
        if size == (64, 96):
            kept = 'unchanged' if torch.equal(loaded, table) else 'CHANGED'
            print(f'create 64x96 at its own size: loads, table {kept}')
        elif loaded.shape == table.shape and torch.equal(loaded, table):
            print(f'create 64x96 -> {size[0]}x{size[1]}: the 7x11-offset table loaded unchanged as 11x7 offsets '
                  f'(max diff to a bicubic 7x11 -> 11x7 resample {(loaded[:-3] - want).abs().max():.3f})')
        else:
            print(f'create 64x96 -> {size[0]}x{size[1]}: table resampled, shape {tuple(loaded.shape)}')


if __name__ == '__main__':
    main()
