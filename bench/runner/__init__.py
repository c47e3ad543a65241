"""Running suites: what a suite is and which specs its points resolve to
(:mod:`~bench.runner.suites`, :mod:`~bench.runner.profiles`, :mod:`~bench.runner.bases`,
:mod:`~bench.runner.recipes`), where studies are stored (:mod:`~bench.runner.storage`),
and running them (:mod:`~bench.runner.grid`, :mod:`~bench.runner.study`,
:mod:`~bench.runner.ablate`)."""
