"""`harness run` and `pytest -p harness.plugin` take one set of run options (harness.option_types.RUN_OPTIONS):
the same names, types, choices, defaults and help on both surfaces."""
import argparse

import pytest

from harness import plugin
from harness.cli import _parser
from harness.option_types import PLUGIN_PREFIX, RUN_OPTIONS, plugin_arguments


class _Registered:
    """A stand-in for pytest's parser and option group: what the plugin registers, by option name."""

    def __init__(self):
        self.options: dict[str, dict] = {}

    def getgroup(self, *args, **kwargs):
        return self

    def addoption(self, name, **keywords):
        self.options[name] = keywords


def _cli_actions() -> dict[str, argparse.Action]:
    subcommands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {flag: action for action in subcommands.choices['run']._actions for flag in action.option_strings}


def _plugin_options() -> dict[str, dict]:
    registered = _Registered()
    plugin.pytest_addoption(registered)
    return registered.options


def _as_cli(keywords: dict) -> dict:
    """The plugin's keywords as argparse resolves them on an action."""
    return {'type': keywords.get('type'), 'choices': keywords.get('choices'), 'default': keywords.get('default'),
            'help': keywords['help'], 'store_true': keywords.get('action') == 'store_true'}


def _of_action(action: argparse.Action) -> dict:
    return {'type': action.type, 'choices': action.choices, 'default': action.default, 'help': action.help,
            'store_true': isinstance(action, argparse._StoreTrueAction)}


@pytest.mark.parametrize('entry', RUN_OPTIONS, ids=lambda e: e.name)
def test_the_command_and_the_plugin_declare_each_run_option_alike(entry):
    cli = _of_action(_cli_actions()[entry.option()])
    registered = _as_cli(_plugin_options()[entry.option(PLUGIN_PREFIX)])
    if entry.why_plugin_default:   # the one declared difference, with its reason
        assert registered.pop('default') == entry.plugin_default and cli.pop('default') == entry.default
    assert cli == registered


def test_every_plugin_option_but_its_own_comes_from_the_table():
    """An option added to one surface alone would drift: only --harness-out (the plugin's switch) and the
    progress interval (the command prints its own lines) are the plugin's own."""
    shared = {entry.option(PLUGIN_PREFIX) for entry in RUN_OPTIONS}
    assert set(_plugin_options()) - shared == {'--harness-out', '--harness-progress-interval'}


def test_the_full_size_switch_is_declared_on_both():
    actions = _cli_actions()
    assert isinstance(actions['--full-size'], argparse._StoreTrueAction)
    assert _plugin_options()['--harness-full-size']['action'] == 'store_true'


def test_the_command_hands_the_plugin_what_it_was_given():
    args = _parser().parse_args(['run', 'm.yaml', '--batch-size', '4', '--compile', '--shard', '2/3',
                                 '--case-timeout', '0', '--full-size'])
    handed = plugin_arguments(vars(args))
    assert handed == ['--harness-batch-size', '4', '--harness-compile', '--harness-shard', '2/3',
                      '--harness-case-timeout', '0.0', '--harness-full-size']
