"""The executor's one dependency on pytest-xdist's private scheduler is fenced
(harness.runtime.isolation.xdist_problem): an xdist (or pytest) that moved a name it relies on fails here, in one
line that names it, not as a run that hangs or reruns a crashed case."""
import pytest
from _pytest.nodes import Node
from xdist.scheduler import LoadGroupScheduling
from xdist.scheduler.loadscope import LoadScopeScheduling

from harness.runtime.isolation import group_suffix_problem, xdist_problem


def test_the_installed_xdist_is_one_the_scheduler_was_written_against():
    problem = xdist_problem()
    assert problem is None, problem


@pytest.mark.parametrize('owner, name, named', [
    (LoadScopeScheduling, '_reschedule', 'LoadGroupScheduling._reschedule(node) is gone'),
    (LoadScopeScheduling, 'remove_node', 'LoadGroupScheduling.remove_node(node) is gone'),
])
def test_a_moved_private_name_is_named_in_one_line(owner, name, named, monkeypatch):
    monkeypatch.delattr(owner, name)
    assert LoadGroupScheduling is not None and not hasattr(LoadGroupScheduling, name)
    problem = xdist_problem()
    assert problem is not None and named in problem and '\n' not in problem
    assert problem.startswith('pytest-xdist ') and 'pyproject.toml pins them' in problem


def test_a_changed_signature_is_named(monkeypatch):
    monkeypatch.setattr(LoadScopeScheduling, '_reschedule', lambda self, node, extra: None)
    assert 'LoadGroupScheduling._reschedule(node) is gone or takes other parameters' in xdist_problem()


class _NodeOfPytest92:
    """As pytest 9.2's Node: its node id kept in ``_id``."""

    @property
    def nodeid(self) -> str:
        return str(self._id)


def test_pytest_node_ids_that_ignore_xdists_group_suffix_are_named():
    """pytest 9.2 keeps a node id in Node._id: xdist 3.8's loadgroup still writes item._nodeid."""
    assert group_suffix_problem(Node) is None
    assert "pytest's node ids no longer come from item._nodeid" in group_suffix_problem(_NodeOfPytest92)
