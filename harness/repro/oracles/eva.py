"""EVA fidelity in a script: the position embedding and patch kernel as :mod:`.vit` resamples them, and the rotary
embedding for the target grid by the harness's own definition (:mod:`harness.reference.rope`), compared with the
one the model's blocks get and the one its forward step returns; for ``dynamic_img_size``, a model built at the
target carrying both (:func:`harness.families.eva.with_reference_rope`)."""
from __future__ import annotations

from harness.families.base import meta_model
from harness.families.eva import (
    MIXED_FREQS_KEY,
    ROPE_KEY,
    eva_forward_tensors,
    expected_eva_forward_tensors,
    rope_config,
    rope_in_use,
    with_reference_rope,
)
from harness.reference.padding import PaddedInput, padded_size
from harness.reference.rope import rope_embedding
from harness.repro import steps
from harness.repro.case import ReproCase
from harness.repro.inline import assignment
from harness.repro.oracles.vit import vit_weight_lines
from harness.repro.snippets import FidelityParts, Snippet, fidelity_snippet, register_snippet


@register_snippet('fidelity', family='eva')
def eva_fidelity(case: ReproCase) -> Snippet:
    computed = case.computed
    lines, functions = vit_weight_lines(case)
    config = rope_config(meta_model(case.model))
    lines += [f'grid = {computed.grid_size}   # the patch grid at the target',
              "# the rotary embedding as the checkpoint's model defines it (None: it has none)",
              *assignment('config', config).splitlines(),
              f'rope = rope_embedding(config, grid, expected.get({MIXED_FREQS_KEY!r})) if config else None']
    functions += (rope_embedding, eva_forward_tensors, expected_eva_forward_tensors)
    unembedded = computed.num_prefix_tokens - computed.pos_prefix_tokens
    oracle = 'with_reference_rope(built, config, grid, expected)'
    if case.path == 'dynamic':
        lines += _built(case)
    return fidelity_snippet(case, FidelityParts(
        tuple(lines), (*functions, *_oracle_functions(case)),
        derived=(f'{{{ROPE_KEY!r}: rope_in_use(model)}}', f'{{{ROPE_KEY!r}: rope}}') if config else None,
        forward=(('eva_forward_tensors(model, grid)',),
                 (f'expected_eva_forward_tensors(expected, {unembedded}, rope)',)),
        oracle=f'PaddedInput({oracle}, {computed.patch_size})' if computed.img_pad else oracle))


def _built(case: ReproCase) -> list[str]:
    """``built``: the model at the target without dynamic_img_size (at the padded size, to be fed padded inputs,
    where it pads), carrying the harness's resample: what EvaFamily.dynamic_reference builds before its rope."""
    computed = case.computed
    if not computed.img_pad:
        return [f'built = carrying(MODEL, dict(SOURCE, img_size={computed.img_size}, dynamic_img_size=False), '
                'expected)']
    size = padded_size(computed.img_size, computed.patch_size)
    return ["unpadded = {k: v for k, v in SOURCE.items() if k != 'dynamic_img_pad'}   # the harness pads instead",
            f'built = carrying(MODEL, dict(unpadded, img_size={size}, dynamic_img_size=False), expected)']


def _oracle_functions(case: ReproCase) -> tuple:
    if case.path != 'dynamic':
        return (rope_in_use,)
    return (rope_in_use, steps.carrying, with_reference_rope, *((PaddedInput,) if case.computed.img_pad else ()))
