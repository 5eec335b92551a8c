"""Moved to :mod:`mefn.data.phantoms.cache`; this old path stays importable."""

from mefn.data.phantoms.cache import CachedPhantom, cache_phantoms, resample_array  # noqa: F401
