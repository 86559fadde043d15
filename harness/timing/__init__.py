"""Timing a case's forward pass: its settings (config: a matrix's ``timing:`` and the per-device defaults), the
timed passes within a budget (forward), the work they did (flops, device_peaks: the datasheet peak for a
fraction of it), and the worker process ``harness ab`` times each release in (worker)."""
