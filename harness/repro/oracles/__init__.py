"""Each family's own repro snippets, one module per family: what its fidelity check recomputes (the harness's
oracle from :mod:`harness.reference`, carried into the script) and how a script compares it. A module joins by
being here: :func:`harness.repro.snippets.snippet_for` imports them all."""
