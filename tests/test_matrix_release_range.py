"""A model entry's `timm:` range: on a release outside it the entry is left out, before timm is asked about the
model (the release may not have it), and the run says so."""
from __future__ import annotations

import pytest
import timm

from harness.spec.matrix import MatrixError, load_matrix

MATRIX = '''
name: ranges
models:
  - {name: naflexvit_base_patch16_gap, timm: ">=1.0.20", embed_dim: 32, depth: 1, num_heads: 2}
  - {name: not_in_this_release, timm: ">=99"}
  - vit_tiny_patch16_224
origins: [timm]
sizes: [224]
'''


def test_entries_outside_their_range_are_left_out_and_named(write_matrix, known_models, monkeypatch):
    matrix = load_matrix(write_matrix(MATRIX), known_models)
    assert [m.name for m in matrix.models] == ['naflexvit_base_patch16_gap', 'vit_tiny_patch16_224']
    assert dict(matrix.models[0].overrides) == {'embed_dim': 32, 'depth': 1, 'num_heads': 2}   # not an override
    assert matrix.left_out == (f'models[1] (not_in_this_release): timm {timm.__version__} is not >=99',)
    monkeypatch.setattr(timm, '__version__', '1.0.8')
    assert [m.name for m in load_matrix(write_matrix(MATRIX), known_models).models] == ['vit_tiny_patch16_224']


def test_a_range_that_is_not_a_specifier_is_bad_input(write_matrix, known_models):
    with pytest.raises(MatrixError, match=r'models\[0\]\.timm: expected a version specifier'):
        load_matrix(write_matrix(MATRIX.replace('">=1.0.20"', 'soon')), known_models)
