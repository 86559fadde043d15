"""Checkpoints: synthesized in each origin's file layout, cached on disk."""
