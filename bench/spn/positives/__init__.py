"""Positive scaling (P) of the SPN paper: generated training triplets.

The pipeline (:func:`bench.spn.positives.pipeline.build_positives`) captions a pool of
images (:mod:`~bench.spn.positives.captioners`), removes near-duplicates
(:mod:`~bench.spn.positives.dedup`), pairs each reference with targets from a window of its
similarity ranking (:mod:`~bench.spn.positives.matching`), writes a modification text for
each pair from the two captions (:mod:`~bench.spn.positives.templates`) and writes the
triplets next to the dataset's official files in its own records
(:mod:`bench.formats.generated` and each format's layout). Every step is cached on
disk, keyed by its inputs.
"""
