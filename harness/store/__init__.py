"""The files of a run folder and their layouts: every JSON file's schema version and upgrade steps (schema), the
case record (case_result), run.json and the settings it holds (run_record, run_settings), the folder's lock and
stale reports (run_folder), files replaced whole (atomic_file). results.jsonl itself is :mod:`harness.results`,
kept at the top for ``harness.results.load``."""
