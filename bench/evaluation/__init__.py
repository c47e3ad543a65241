"""Evaluation: image and query representations (:mod:`~bench.evaluation.encode`, the
feature cache) and the official metrics of a split (:mod:`~bench.evaluation.evaluate`)."""
