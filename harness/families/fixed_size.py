"""Models that take only their own input size (MLP-Mixer, CaiT, LeViT; CrossViT scales any input back).

A forward pass on the meta device at another size raises, or gives the same features as at the model's own
size, and timm offers no way to resize it. A matrix may list them: every case is ``unsupported``, with what
the pass at the other size showed, so a user learns why instead of meeting a shape error.
"""
from __future__ import annotations

from harness.families import Geometry, Target, register_family, to_size
from harness.families.base import Family


@register_family
class FixedSizeFamily(Family):
    name = 'fixed_size'
    attention = 'none'      # its only size is its own: nothing attends beyond what it was built for
    trigger_kinds = ()   # takes only its own size
    category = 'fixed_size'
    rank = 20
    paths = ()
    checks = ()
    patch_sizes_apply = False
    fixed_patch = 'it takes only its own input size'
    stores_geometry = False

    def claim(self, probe):
        if probe.problem:
            return ''
        if probe.timm_resizes:
            return (f'timm can resize {type(probe.model).__name__} (set_input_size / dynamic_img_size), but no '
                    f'family has an oracle for what it resamples yet')
        return '' if probe.takes_other_sizes else None

    def unsupported(self, model_name: str) -> str | None:
        from harness.families.probe import probe
        return probe(model_name).fixed_size_reason

    def geometry(self, model) -> Geometry:
        size = to_size(tuple((model.pretrained_cfg or {}).get('input_size', (3, 224, 224))[1:]))
        return Geometry(img_size=size, patch_size=(1, 1), grid_size=size, embed_dim=model.num_features,
                        num_features=model.num_features, num_classes=model.num_classes)

    def expected_geometry(self, source: Geometry, target: Target) -> Geometry:
        return source

    def size_problem(self, model, size, patch_size) -> str | None:
        return None   # every case is unsupported, whatever its size
