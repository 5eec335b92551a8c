"""Challenge metrics (AutoPET, HECKTOR) agreeing with the organisers' code, lesion detection,
calibration and uncertainty quality, and the folder-level evaluation drivers.

Submodules: :mod:`~mefn.metrics.autopet`, :mod:`~mefn.metrics.hecktor`,
:mod:`~mefn.metrics.lesions`, :mod:`~mefn.metrics.calibration`, :mod:`~mefn.metrics.plots`,
:mod:`~mefn.metrics.evaluate`. Importing this package loads numpy only.
"""
