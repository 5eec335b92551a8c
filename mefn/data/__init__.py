"""Data preparation for mefn: model space, augmentation, dataset indexers, synthetic phantoms.

Submodules are imported on demand (``from mefn.data.phantoms import generate_study``) so that
importing :mod:`mefn.data` stays light.
"""
