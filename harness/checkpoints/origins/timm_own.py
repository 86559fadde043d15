"""Origin ``timm``: timm's own state dict, saved as safetensors as timm's hub releases ship it."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from harness.checkpoints.origins import StateDict, register_origin
from harness.checkpoints.origins.mapping import save_safetensors, timm_state


def write_timm(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """timm's own layout, safetensors (timm picks the reader by the .safetensors suffix)."""
    reference = timm_state(model)
    save_file(reference, str(path))
    return reference


@register_origin('timm', "timm's own state dict (safetensors)", rank=0, filename='model.safetensors',
                 save=save_safetensors, repro_writer=write_timm)
def timm_layout(model: nn.Module) -> tuple[StateDict, StateDict]:
    """``model.state_dict()`` as it is: what the file holds is what timm recovers."""
    expected = timm_state(model)
    return expected, expected
