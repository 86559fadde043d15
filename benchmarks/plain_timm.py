"""The timm work behind benchmarks/overhead.py's cases, written as a user would: the same model builds and
forward passes the harness makes for its checks, and nothing else. Once, the checkpoint's model at its own
size and a forward pass (the harness's drift baseline); per case, the model built the case's way from the
cached checkpoint and a forward pass at the target size; per dynamic case also a model built at the target
size and a forward pass (the harness's reference for what dynamic_img_size must compute).

    python benchmarks/plain_timm.py '<JSON spec written by overhead.py>'

The spec: {"model": name, "model_kwargs": {...}, "overlay": pretrained_cfg_overlay, "num_images": N,
"device": "cpu", "cases": [[path, [H, W]], ...]}. Imports nothing from the harness.
"""
import json
import sys

import timm
import torch


def build(spec: dict, path: str, size: tuple[int, int] | None) -> torch.nn.Module:
    """The case's model built ``path``'s way; ``set_input_size`` with no size is the checkpoint's own model."""
    def create(**kwargs) -> torch.nn.Module:
        return timm.create_model(spec['model'], pretrained=True, pretrained_cfg_overlay=spec['overlay'],
                                 **{**spec['model_kwargs'], **kwargs})

    if path == 'create':
        return create(img_size=size)
    if path == 'set_input_size':
        model = create()
        if size is not None:
            model.set_input_size(img_size=size)
        return model
    return create(dynamic_img_size=True)


@torch.no_grad()
def forward(spec: dict, model: torch.nn.Module, size: tuple[int, int], device: torch.device) -> None:
    images = torch.randn(spec['num_images'], 3, *size, device=device)
    model.eval().to(device).forward_head(model.forward_features(images))


def main() -> None:
    spec = json.loads(sys.argv[1])
    device = torch.device(spec['device'])
    native = build(spec, 'set_input_size', None)
    forward(spec, native, tuple(native.patch_embed.img_size), device)
    for path, size in spec['cases']:
        forward(spec, build(spec, path, tuple(size)), tuple(size), device)
        if path == 'dynamic':
            forward(spec, build(spec, 'create', tuple(size)), tuple(size), device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


if __name__ == '__main__':
    main()
