"""The SPN modifiers (Feng, Zhang, Nie, ACM MM 2024) applied to any registered method.

* :mod:`~bench.spn.compositions`: the one vocabulary of compositions (``none``, ``P``,
  ``P-control``, ``N``, ``P+N``, zero-shot ``ZS`` / ``ZS+N`` / ``ZS-ood`` / ``ZS-ood+N``):
  what each means, how a spec's ``spn`` block names one;
* :mod:`~bench.spn.modifiers`: the :class:`~bench.spn.modifiers.Modifier` interface (what
  phase a modifier adds after stage 1, its objective, its extra training triplets) and
  the registry of modifiers;
* :mod:`~bench.spn.negatives`: negative scaling (N), the bank stage against a static bank;
* :mod:`~bench.spn.positives`: positive scaling (P), generated triplets and their mixing.

This package's ``__init__`` imports nothing: :mod:`~bench.spn.compositions` and
:mod:`~bench.spn.positives.templates` are spec vocabulary that :mod:`bench.config`
validates against, so they sit below it in the import layers.
"""
