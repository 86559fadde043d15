"""The subcommands of ``harness``, one module each: ``add_parser(subparsers)`` declares its arguments and sets
``handler``, a ``main(args, extra, argv) -> exit code``. :mod:`harness.cli` dispatches to them."""
from harness.commands import ab, bisect, compare, coverage, findings, merge, report, repro, run

# in the order `harness --help` lists them
COMMANDS = (run, report, compare, ab, bisect, merge, coverage, repro, findings)
