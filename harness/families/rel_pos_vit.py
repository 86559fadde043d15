"""ViTs whose attention is biased by relative positions over the whole token grid: BEiT (``beit.py``: a table
per block or one shared, with three class-token rows) and timm's relative-position ViTs
(``vision_transformer_relpos.py``: a table or Swin V2's log-coordinate MLP, per block or shared, with or
without a class token).

Every relative-position module's window is the patch grid, so a new input or patch size resizes all of them
to the new grid; everything else is a ViT's (patch kernel, BEiT's optional absolute position embedding).
timm resizes them at create time and with ``set_input_size`` (1.0.31 on); neither model takes
``dynamic_img_size``.
"""
from __future__ import annotations

from harness.families import Geometry, Size, register_family
from harness.families.base import GEOMETRIC
from harness.families.rel_pos import RelPosModules
from harness.families.vit import VitFamily


class GridRelPosVitFamily(RelPosModules, VitFamily):
    paths = ('create', 'set_input_size')
    trigger_kinds = GEOMETRIC   # its oracle does not model dynamic_img_pad

    def rel_pos_window(self, module: str, geometry: Geometry) -> Size:
        return geometry.grid_size

    def forward_tensors(self, model, computed):
        """None: BEiT adds its absolute position embedding inside ``forward_features`` (no ``_pos_embed`` step
        to run on its own) and no path resamples it per forward; fidelity compares the stored one."""
        return {}

    def expected_forward_tensors(self, weights, spec, source, computed):
        return {}


@register_family
class BeitFamily(GridRelPosVitFamily):
    name = 'beit'
    model_classes = ('timm.models.beit.Beit',)


@register_family
class RelPosVitFamily(GridRelPosVitFamily):
    name = 'vit_relpos'
    model_classes = ('timm.models.vision_transformer_relpos.VisionTransformerRelPos',)
