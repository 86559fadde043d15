"""What is read from finished runs: reports (report.md, report.html), compare (two runs, base vs new), findings
(failed cases grouped by root cause), merge (shards into one run), ab (two releases interleaved), bisect (the
release a case changed in) and coverage (what the harness runs of a release)."""
