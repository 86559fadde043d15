"""How a run runs: before pytest starts (preflight, run_start), the cases as pytest items (items), one process
per checkpoint under xdist with its private scheduler fenced (isolation), a deadline per case (watchdog), the
device's timing lock (device_lock), and Ctrl-C or SIGTERM (interruption). The pytest plugin itself stays
``harness.plugin``, the name ``pytest -p`` takes."""
