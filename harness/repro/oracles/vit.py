"""ViT fidelity in a script: the position embedding and patch kernel as the harness resamples them."""
from __future__ import annotations

from harness.families.base import meta_model
from harness.reference.pos_embed import resample_pos_embed
from harness.repro import steps
from harness.repro.case import ReproCase
from harness.repro.snippets import Snippet, kernel_lines, register_snippet


def vit_weight_lines(case: ReproCase) -> tuple[list[str], tuple]:
    """``expected``: the source checkpoint, its patch kernel and absolute position embedding (where the model has
    one) resampled as the harness resamples them (every ViT-like family shares this)."""
    source, computed = case.source, case.computed
    lines, functions = kernel_lines(case)
    if source.grid_size != computed.grid_size and 'pos_embed' in meta_model(case.model).state_dict():
        lines.append(f"expected['pos_embed'] = resample_pos_embed(reference['pos_embed'], {source.grid_size}, "
                     f"{computed.grid_size}, {source.pos_prefix_tokens}, {case.interpolation!r}, {case.antialias})")
        functions += (resample_pos_embed,)
    return lines, functions


@register_snippet('fidelity', family='vit')
@register_snippet('fidelity', family='vit_hybrid')   # a ViT's position embedding and projection kernel
def vit_fidelity(case: ReproCase) -> Snippet:
    computed, tol = case.computed, case.tolerances
    lines, functions = vit_weight_lines(case)
    if case.path == 'dynamic':   # nothing resampled is stored: the model built at the target carries the oracle
        lines += [f'oracle = carrying(MODEL, dict(SOURCE, img_size={computed.img_size}), expected)',
                  f'check_outputs(outputs[1], forward(oracle, inputs)[1], atol={tol.fidelity_outputs_atol!r})']
        return Snippet(tuple(lines), (*functions, steps.carrying, steps.check_outputs), uses=('reference', 'outputs'))
    return Snippet((*lines, f"check_weights('fidelity', model, expected, atol={tol.fidelity_weights_atol!r})"),
                   (*functions, steps.check_weights), uses=('reference', 'model'))
