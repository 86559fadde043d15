"""The timm work behind benchmarks/overhead.py's cases, written as a user would: for each case build the
model its way from the cached checkpoint, then run one forward pass on the case's images at the target size.

    python benchmarks/plain_timm.py '<JSON spec written by overhead.py>'

The spec: {"model": name, "model_kwargs": {...}, "overlay": pretrained_cfg_overlay, "num_images": N,
"device": "cpu", "cases": [[path, [H, W]], ...]}. Imports nothing from the harness.
"""
import json
import sys

import timm
import torch


def build(spec: dict, path: str, size: tuple[int, int]) -> torch.nn.Module:
    def create(**kwargs) -> torch.nn.Module:
        return timm.create_model(spec['model'], pretrained=True, pretrained_cfg_overlay=spec['overlay'],
                                 **{**spec['model_kwargs'], **kwargs})

    if path == 'create':
        return create(img_size=size)
    if path == 'set_input_size':
        model = create()
        model.set_input_size(img_size=size)
        return model
    return create(dynamic_img_size=True)


@torch.no_grad()
def main() -> None:
    spec = json.loads(sys.argv[1])
    device = torch.device(spec['device'])
    for path, size in spec['cases']:
        model = build(spec, path, tuple(size)).eval().to(device)
        images = torch.randn(spec['num_images'], 3, *size, device=device)
        model.forward_head(model.forward_features(images))
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


if __name__ == '__main__':
    main()
