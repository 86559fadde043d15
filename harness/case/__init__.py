"""One case from checkpoint to judged result, and the checks it runs.

:mod:`~harness.case.check_registry` holds one record per check (no torch: results, matrices, compare and the
report read it). The stages, in the order data flows: :mod:`~harness.case.native` (the checkpoint at its own
configuration), :mod:`~harness.case.paths` (one path built and checked on its own), :mod:`~harness.case.work`
(what a checkpoint's cases share, computed once), :mod:`~harness.case.runner` (one case's stages, then
:mod:`~harness.case.verdict`), :mod:`~harness.case.timed` (its timing figures).

Nothing is imported here: ``import harness.case.check_registry`` must not import torch.
"""
