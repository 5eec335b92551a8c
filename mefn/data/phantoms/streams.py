"""The random-number streams of a phantom study: ``numpy.random.default_rng([seed, stream])``.

One stream per purpose, so that a seed always gives the same study and changing the grid
options leaves the patient and lesions of that seed unchanged.
"""

from __future__ import annotations

(
    ANATOMY_STREAM,
    LESIONS_STREAM,
    GRIDS_STREAM,
    CT_NOISE_STREAM,
    PET_NOISE_STREAM,
    SCANNER_STREAM,
    NAMES_STREAM,  # case names, dates and doses of the written layouts
) = range(7)
CTRES_NOISE_SUBSTREAM = 1  # the CT noise of the CT rendered on the PET grid (CTres)
