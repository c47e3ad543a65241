"""The bottom layer: what every other package builds on, importing nothing else of cirbench.

``errors`` (exception types), ``paths`` (``CIRBENCH_HOME`` and its folders), ``atomic``
(every atomic file write), ``reading`` (the one reader of data files: every OS and
decoding error a ``DataFormatError`` naming the file), ``locks`` (inter-process file
locks), ``hashing`` (content digests), ``arrays`` (the on-disk array cache), ``runtime``
(device, seeding, RNG state, mixed precision), ``optim`` (optimiser and schedule),
``checkpoints`` (the one resume format), ``distributed`` (torchrun data parallelism).
"""
