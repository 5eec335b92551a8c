"""Thin scripts that compose :mod:`mefn`: prepare, train, fine-tune, evaluate, benchmark.

Run them from the repository root as modules, ``python -m pipelines.NAME`` (e.g.
``python -m pipelines.benchmark --help``); they import each other as
``from pipelines import _bench``. Nothing in :mod:`mefn` imports this package.
"""
