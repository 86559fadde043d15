"""Origin ``hub``: timm's real pretrained tag, downloaded from the hub (nothing is synthesized)."""
from harness.checkpoints.origins import HUB_ORIGIN, Origin, register

register(Origin(HUB_ORIGIN, "timm's default pretrained tag, downloaded from the hub", rank=7))
