"""The shifted-window families: Swin v1 with rectangular and per-stage windows, Swin-V2 and Swin-V2-CR with their
continuous position bias, each oracle against timm's real code and against a deliberately wrong one."""
from __future__ import annotations

import pytest
import timm
import timm.models.swin_transformer as swin_module
import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import WindowAttention as V2Attention
from timm.models.swin_transformer_v2_cr import WindowMultiHeadAttention as CrAttention

from harness.families import family_of
from harness.families.swin_v2 import cpb_tensors
from harness.reference import cpb

pytestmark = pytest.mark.filterwarnings('ignore:Using a non-tuple sequence:UserWarning',
                                        'ignore:torch.searchsorted:UserWarning')

V1 = 'swin_tiny_patch4_window7_224'
V2 = 'swinv2_tiny_window8_256'
CR = 'swinv2_cr_tiny_224'
TINY = 'embed_dim: 16, depths: [2, 2, 2], num_heads: [1, 2, 2]'
TINY_V2 = 'embed_dim: 16, depths: [2, 2], num_heads: [1, 2]'


def statuses(results: dict) -> dict[str, str]:
    return {case_id: r.status for case_id, r in results.items()}


@pytest.mark.parametrize('model, family', [('swin_s3_tiny_224', 'swin'), (V2, 'swin_v2'), (CR, 'swin_v2_cr')])
def test_every_swin_class_has_an_oracle_family(model, family):
    assert family_of(model).name == family and family_of(model).category == 'oracle'


# --- the continuous position bias oracle against timm's modules ------------------------------------------------

@pytest.mark.parametrize('window, pretrained', [((4, 6), (0, 0)), ((6, 4), (0, 0)), ((3, 5), (8, 8)),
                                                ((1, 4), (0, 0)), ((5, 5), (3, 3))])
def test_cpb_oracle_matches_timm_attention(window, pretrained):
    torch.manual_seed(0)
    v2 = V2Attention(8, window, 2, pretrained_window_size=pretrained)
    cr = CrAttention(8, 2, window).eval()   # (its MLP has dropout)
    with torch.no_grad():
        for p in (*v2.cpb_mlp.parameters(), *cr.meta_mlp.parameters()):
            p.normal_()
    table = cpb.log_spaced_table(window, pretrained)
    torch.testing.assert_close(v2.relative_coords_table.double(), table, atol=1e-6, rtol=0)
    ours = cpb.v2_position_bias(table, window, v2.cpb_mlp[0].weight, v2.cpb_mlp[0].bias, v2.cpb_mlp[2].weight)
    theirs = cpb_tensors(_one_block_v2(v2))['layers.0.blocks.0.attn.position_bias']
    torch.testing.assert_close(theirs.double(), ours, atol=1e-4, rtol=0)
    coords = cpb.log_pair_coords(window)
    torch.testing.assert_close(cr.relative_coordinates_log.double(), coords, atol=1e-6, rtol=0)
    mlp = cr.meta_mlp
    ours = cpb.cr_position_bias(coords, window, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias)
    torch.testing.assert_close(cr._relative_positional_encodings()[0].detach().double(), ours, atol=1e-4, rtol=0)


def _one_block_v2(attn: torch.nn.Module) -> torch.nn.Module:
    """A stand-in with the attribute path cpb_tensors walks (``layers.0.blocks.0.attn``)."""
    block = torch.nn.Module()
    block.attn = attn
    stage = torch.nn.Module()
    stage.blocks = torch.nn.ModuleList([block])
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([stage])
    return model


def test_log_spaced_table_sees_a_window_normalised_as_if_square():
    """Normalising both axes by the height gives a table of the right shape with the wrong widths."""
    right = cpb.log_spaced_table((4, 8))
    square = cpb.log_spaced_table((4, 8), pretrained_window=(4, 4))
    assert right.shape == square.shape == (1, 7, 15, 2)
    assert (right - square).abs().max() > 0.2
    torch.testing.assert_close(right[..., 0], square[..., 0])


def test_create_and_set_input_size_compute_the_same_position_bias():
    """Swin-V2 recomputes its coordinates for the new window however it got there: exactly the same tensors."""
    tiny = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2))
    created = timm.create_model(V2, img_size=(64, 128), window_size=(4, 6), **tiny)
    resized = timm.create_model(V2, img_size=(64, 96), window_size=4, **tiny)
    resized.load_state_dict(created.state_dict())
    resized.set_input_size(img_size=(64, 128), window_size=(4, 6))
    ours, theirs = cpb_tensors(created), cpb_tensors(resized)
    assert ours.keys() == theirs.keys() and len(ours) == 8
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


# --- Swin v1: rectangular and per-stage windows ----------------------------------------------------------------

def matrix(*models: str) -> str:
    """A matrix of the given model entries (YAML flow mappings without braces), at 64x128 unless an entry says
    otherwise, from synthesized timm checkpoints."""
    entries = ''.join(f'  - {{{model}}}\n' for model in models)
    return f'name: swin\nmodels:\n{entries}origins: [timm]\nsizes: [[64, 128]]\nnum_images: 2\n'


RECT = f'name: {V1}, {TINY}, img_size: [64, 96], window_size: [4, 6]'   # source window 4x6
PER_STAGE = f'name: {V1}, {TINY}, img_size: [64, 96], window_size: [[4, 6], 4, 2]'   # one window per stage


def test_rectangular_and_per_stage_source_windows_resample_from_what_they_were(run_matrix):
    results = run_matrix(matrix(f'{RECT}, label: rect, window_sizes: [[4, 6]]',
                                f'{RECT}, label: rect_to_6x4, window_sizes: [[6, 4]], paths: [set_input_size]',
                                f'{PER_STAGE}, label: per_stage, paths: [create, set_input_size]'))
    assert set(statuses(results).values()) == {'passed'}, {k: r.reason for k, r in results.items()}
    rect = results['rect-timm-64x128-window4x6-create']
    assert rect.source_window_size == [4, 6] and rect.window_size == [4, 6]
    assert results['per_stage-timm-64x128-create'].source_window_size == [4, 6]
    resampled = results['rect_to_6x4-timm-64x128-window6x4-set_input_size']
    assert 0 < resampled.fidelity_weights_max_abs_diff < 1e-4   # every table resampled, to the oracle's values
    # dynamic keeps the source's shifts: the last stage (4x6 at the source, 4x8 now) shifts only in create
    dynamic = results['rect-timm-64x128-window4x6-dynamic']
    assert 'shifts [2x3, 2x3, 0x0] (the source configuration), create with [4x6, 4x6, 4x6] and [2x3, 2x3, 0x3]' \
        in dynamic.parity_note


def test_the_harness_asks_set_input_size_for_the_configured_windows_stage_by_stage():
    from harness.families import Target
    from harness.families.base import native_geometry
    from harness.spec.matrix import ModelSpec
    family = family_of(V1)
    spec = ModelSpec(V1, (('depths', (2, 2, 2)), ('embed_dim', 16), ('img_size', (64, 96)), ('num_heads', (1, 2, 2)),
                          ('window_size', ((4, 6), 4, 2))))
    source = native_geometry(family, spec)
    assert source.window_sizes == ((4, 6), (4, 4), (2, 2)) and source.shift_sizes == ((2, 3), (2, 2), (1, 1))
    assert family.set_input_size_kwargs(Target((128, 64)), source) == {
        'img_size': (128, 64), 'window_size': [[4, 6], [4, 4], [2, 2]]}
    wider = family.expected_geometry(source, Target((32, 192)))
    assert wider.window_sizes == ((4, 6), (4, 4), (2, 2)) and wider.shift_sizes == ((2, 3), (0, 2), (0, 1))
    assert family.expected_geometry(source, Target((32, 192), window_size=(8, 12))).window_sizes == \
        ((8, 12), (4, 12), (2, 12))


@pytest.mark.parametrize('model, kwargs, configured', [
    ('swin_s3_tiny_224', {}, ((7, 7), (7, 7), (14, 14), (7, 7))),    # windows that fill their stage: as they are
    (V1, {'img_size': 128}, ((7, 7), (7, 7), (7, 7), (7, 7))),         # a 4x4 last stage, configured with 7
])
def test_configured_windows_are_inferred_where_timm_keeps_no_record(model, kwargs, configured):
    """Before timm 1.0.31 nothing records the windows a stage smaller than its window was configured with."""
    from harness.families.base import meta_model
    from harness.spec.matrix import ModelSpec
    built = meta_model(ModelSpec(model, tuple(kwargs.items())))
    recorded = family_of(model).geometry(built).window_config
    del built._ref_window_sizes
    try:
        assert family_of(model).geometry(built).window_config == recorded == configured
    finally:
        built._ref_window_sizes = recorded   # the meta build is cached


def test_fidelity_catches_a_table_resample_that_reads_a_rectangular_window_transposed(run_matrix, monkeypatch):
    """Code written for square windows may take (h, w) as (w, h): for a square one it does no harm. Same shape,
    wrong values: only the oracle, on the true rectangular window, sees it."""
    original = swin_module.resize_rel_pos_bias_table

    def transposed(rel_pos_bias, new_window_size, new_bias_shape, old_window_size=None):
        old = None if old_window_size is None else tuple(old_window_size)[::-1]
        return original(rel_pos_bias, new_window_size, new_bias_shape, old_window_size=old)
    monkeypatch.setattr(swin_module, 'resize_rel_pos_bias_table', transposed)
    result, = run_matrix(matrix(f'{RECT}, window_sizes: [[6, 4]], paths: [set_input_size]')).values()
    assert result.status == 'failed' and result.failed_checks == ['fidelity'], result.reason
    assert result.fidelity_worst_tensor.endswith('relative_position_bias_table')


class _RollSwapped:
    """torch as swin_transformer.py sees it, except that a roll takes the height's shift along the width and the
    width's along the height: harmless for square shifts, for a 4x6 window's 2x3 shift it moves other positions
    into each window (mutant swin-roll-hw-swapped)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    def roll(self, x, shifts, dims):
        return torch.roll(x, shifts=tuple(shifts)[::-1], dims=dims)


def test_fidelity_catches_a_cyclic_shift_with_height_and_width_exchanged(run_matrix, monkeypatch):
    """Every reference model runs timm's own block code, shift included: only the windows each block forms from a
    map of position numbers, against the harness's own roll-pad-partition, see it, on every path."""
    monkeypatch.setattr(swin_module, 'torch', _RollSwapped())
    results = run_matrix(matrix(f'{RECT}, window_sizes: [[4, 6]]'))
    assert {r.path for r in results.values()} == {'create', 'set_input_size', 'dynamic'}
    for result in results.values():
        assert result.status == 'failed' and result.failed_checks == ['fidelity'], result.reason
        assert result.fidelity_worst_tensor.endswith('.blocks.1.windows in use'), result.fidelity_worst_tensor


def test_shapes_catch_a_shift_kept_where_the_window_covers_the_map(run_matrix, monkeypatch):
    """A block whose window covers its whole map must not shift (mutant swin-shift-not-reset): the stored shift
    is compared with the one the target implies."""
    original = swin_module.SwinTransformerBlock._calc_window_shift

    def kept(self, target_window_size, target_shift_size=None):
        window, shift = original(self, target_window_size, target_shift_size)
        return window, (tuple(w // 2 for w in window) if any(self.target_shift_size) else shift)
    monkeypatch.setattr(swin_module.SwinTransformerBlock, '_calc_window_shift', kept)
    result, = run_matrix(matrix(f'name: {V1}, {TINY}, img_size: 64, window_size: 4, paths: [set_input_size]')).values()
    assert result.status == 'failed' and 'shapes' in result.failed_checks, result.reason
    assert 'shift_sizes: stored' in result.reason


def test_noop_catches_per_stage_windows_flattened_to_one(run_matrix, monkeypatch):
    """A set_input_size that, asked for no window, gives every stage the first stage's: the case's own path
    spells its windows out and passes fidelity, the call users make moves the model."""
    original = SwinTransformer.set_input_size

    def flattening(self, img_size=None, patch_size=None, window_size=None, **kwargs):
        return original(self, img_size=img_size, patch_size=patch_size,
                        window_size=window_size or self._ref_window_sizes[0], **kwargs)
    monkeypatch.setattr(SwinTransformer, 'set_input_size', flattening)
    result, = run_matrix(matrix(f'{PER_STAGE}, paths: [set_input_size]')).values()
    assert result.status == 'failed' and result.failed_checks == ['noop'], result.reason
    assert 'window_sizes: stored ((4, 6), (4, 6), (4, 6)), expected ((4, 6), (4, 4), (2, 2))' in result.reason


def test_a_resample_raising_at_the_checkpoints_own_configuration_fails_resize(run_matrix, monkeypatch):
    """timm before 1.0.31 resamples every rectangular window's table on load, taking it for a square one's, and
    raises: at the checkpoint's own configuration that is a failed resize for each case, not a harness error."""
    original = swin_module.resize_rel_pos_bias_table

    def guessing_square(rel_pos_bias, new_window_size, new_bias_shape, old_window_size=None):
        side = int(rel_pos_bias.shape[0] ** 0.5) // 2 + 1   # a 7 x 11 table read as a 5x5 window's (9 x 9)
        return original(rel_pos_bias, new_window_size, new_bias_shape, old_window_size=(side, side))
    monkeypatch.setattr(swin_module, 'resize_rel_pos_bias_table', guessing_square)
    results = run_matrix(matrix(f'{RECT}, paths: [create, set_input_size]'))
    assert statuses(results) == dict.fromkeys(results, 'failed')
    assert all(r.failed_checks == ['resize'] and r.resize_error.startswith('native size: create_model(')
               and 'raised while resampling the checkpoint: RuntimeError' in r.resize_error for r in results.values())


def test_a_release_that_ignores_dynamic_img_size_is_unsupported(run_matrix, monkeypatch):
    """timm 1.0.8's Swin constructors take **kwargs: dynamic_img_size=True is accepted and does nothing."""
    original = SwinTransformer.__init__

    def swallowing(self, *args, dynamic_img_size=False, **kwargs):
        original(self, *args, **kwargs)
    monkeypatch.setattr(SwinTransformer, '__init__', swallowing)
    result, = run_matrix(matrix(f'{RECT}, paths: [dynamic]')).values()
    assert result.status == 'unsupported' and 'ignores dynamic_img_size=True' in result.reason


# --- Swin-V2 and Swin-V2-CR ------------------------------------------------------------------------------------

V2_RECT = f'name: {V2}, {TINY_V2}, img_size: [64, 96], window_size: 4'
CR_RECT = f'name: {CR}, {TINY_V2}, img_size: [64, 128], window_size: [4, 8], window_sizes: [[4, 8]], sizes: [[64, 192]]'
CR_RATIO = f'name: swinv2_cr_tiny_ns_224, {TINY_V2}, img_size: 128, sizes: [[128, 192]]'   # windows 128 / 4 / 8


def test_swin_v2_and_v2_cr_through_every_path(run_matrix):
    results = run_matrix(matrix(f'{V2_RECT}, window_sizes: [4, [4, 6]]', CR_RECT, CR_RATIO))
    v2, cr, ratio = f'{V2}-timm-64x128', f'{CR}-timm-64x192-window4x8', 'swinv2_cr_tiny_ns_224-timm-128x192'
    expected = {f'{v2}-window4-{path}': 'passed' for path in ('create', 'set_input_size', 'dynamic')}
    expected.update({f'{v2}-window4x6-create': 'passed', f'{v2}-window4x6-set_input_size': 'passed',
                     f'{v2}-window4x6-dynamic': 'unsupported'})   # dynamic_img_size keeps the windows
    expected.update({f'{case}-{path}': 'passed' for case in (cr, ratio)
                     for path in ('create', 'set_input_size', 'dynamic')})
    assert statuses(results) == expected, {k: r.reason for k, r in results.items() if r.status != 'passed'}
    for r in results.values():
        if r.status == 'passed':   # coordinates and bias compared on every path (dynamic: per forward)
            assert r.fidelity_weights_max_abs_diff < 1e-4
            assert r.fidelity_worst_tensor.endswith('position_bias')
        if r.path != 'dynamic' and r.status == 'passed':   # create and set_input_size agree exactly
            assert r.parity_max_abs_diff in (None, 0.0)
    assert results[f'{v2}-window4x6-create'].source_window_size == 4
    note = results[f'{ratio}-dynamic'].parity_note   # create divides the new grid by the ratio; dynamic keeps 4x4
    assert 'dynamic computes with windows [4x4, 4x4]' in note and 'create with [4x6, 4x6]' in note


def test_synthesized_swin_v2_has_trained_post_norms_and_position_dependent_bias():
    from harness.checkpoints.synthesize import seeded_model
    model = seeded_model(V2, dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), img_size=(64, 96), window_size=4), 0)
    block = model.layers[1].blocks[0]
    assert block.norm1.weight.min() > 0.4 and block.norm2.weight.min() > 0.4   # timm: 0, every branch off
    assert block.attn.logit_scale.flatten().unique().numel() == block.attn.num_heads == 2   # timm: log(10) each
    bias = cpb_tensors(model)['layers.0.blocks.0.attn.position_bias']
    assert bias.std(dim=(1, 2)).min() > 1.0   # of a range of 16: position matters


def test_fidelity_catches_v2_coordinates_normalised_as_if_the_window_were_square(run_matrix, monkeypatch):
    original = V2Attention._make_pair_wise_relative_positions

    def square(self, *args, **kwargs):
        saved = self.pretrained_window_size
        self.pretrained_window_size = (saved[0] or self.window_size[0],) * 2   # both axes by the height
        try:
            return original(self, *args, **kwargs)
        finally:
            self.pretrained_window_size = saved
    monkeypatch.setattr(V2Attention, '_make_pair_wise_relative_positions', square)
    result, = run_matrix(matrix(f'{V2_RECT}, window_sizes: [[4, 6]], paths: [set_input_size]')).values()
    assert result.status == 'failed' and result.failed_checks == ['fidelity'], result.reason
    assert result.fidelity_worst_tensor.endswith(('relative_coords_table', 'position_bias'))


def test_swin_v2_round_trips_through_the_original_repository_layout(tmp_path):
    """The original release's keys (end-of-stage merges, ``head``, CPB MLP, persistent coordinate tables) back
    through timm's conversion, exactly: the round trip every layout writer is held to."""
    import tests.test_layouts as layouts
    case = layouts.Case('microsoft', V2, dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), img_size=64,
                                              window_size=4),
                        shapes={('model', 'layers.0.downsample.reduction.weight'): (32, 64),
                                ('model', 'layers.0.downsample.norm.weight'): (32,),
                                ('model', 'layers.1.blocks.0.attn.cpb_mlp.2.weight'): (2, 512),
                                ('model', 'layers.0.blocks.1.attn.relative_coords_table'): (1, 7, 7, 2),
                                ('model', 'layers.0.blocks.1.attn_mask'): (16, 16, 16)},
                        absent=(('model', 'layers.1.downsample.reduction.weight'), ('model', 'head.fc.weight'),
                                ('model', 'layers.0.blocks.0.attn.k_bias')), wrapper=('model',))
    layouts.test_round_trip(case, tmp_path)
