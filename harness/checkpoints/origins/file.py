"""Origin ``file``: a user's checkpoint (``{file: PATH}`` in a matrix), loaded like a hub file.

Its format, class count and ``custom_load`` come from the matrix entry, not from this record; the file is
vetted (:mod:`harness.checkpoints.vetting`) and read from its copy in the cache
(:func:`harness.checkpoints.store.vetted_copy`).
"""
from harness.checkpoints.origins import FILE_ORIGIN, Origin, register

register(Origin(FILE_ORIGIN, "a user's checkpoint file, loaded like a hub file", rank=8))
