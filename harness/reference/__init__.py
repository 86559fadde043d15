"""The harness's own implementations of what timm computes when it resizes a model, written independently.

The fidelity check loads a checkpoint into a resized model and asks whether timm resampled each tensor to
the values it should have. Comparing timm against timm would prove nothing, so the expected values come from
this package: a second implementation of each algorithm, written from its definition and calling none of
timm's resampling code. One module per mechanism:

* :mod:`.pos_embed`: absolute position embeddings, the token grid resized as an image;
* :mod:`.patch_kernel`: patch-embedding kernels, FlexiViT's pseudo-inverse resampling;
* :mod:`.rel_pos_table`: relative position bias tables, BEiT's geometric-progression interpolation;
* :mod:`.window_masks`: the attention masks of Swin's shifted windows;
* :mod:`.rope`: rotary position embeddings (axial, RoPE-Mixed, DINOv3) on a 2-D patch grid.

Every size is an ``(h, w)`` tuple and nothing assumes a square grid, since treating a rectangular grid as
square is one of the bugs the harness hunts.
"""
