"""Synthetic FDG PET/CT studies with known lesions, for training, tests and demos.

The generator, in the order a study is made (each module imports only those above it):

- :mod:`~mefn.data.phantoms.shapes`: analytic shapes, layers and their partial-volume painting;
- :mod:`~mefn.data.phantoms.frame`: the patient frame, scaled and moved into the scanner;
- :mod:`~mefn.data.phantoms.tissues`: per-study tissue values (HU, SUV), the layer stack;
- :mod:`~mefn.data.phantoms.body`, :mod:`~mefn.data.phantoms.thorax`,
  :mod:`~mefn.data.phantoms.abdomen`, :mod:`~mefn.data.phantoms.skeleton`,
  :mod:`~mefn.data.phantoms.head_neck`: the anatomical sections;
- :mod:`~mefn.data.phantoms.sites`: where lesions grow, landmarks inside tissues;
- :mod:`~mefn.data.phantoms.anatomy`: :func:`build_anatomy`, the sections in painting order;
- :mod:`~mefn.data.phantoms.lesions`: lesion shapes, uptake and CT appearance;
- :mod:`~mefn.data.phantoms.grids`: the CT and PET grids, scan range, field of view;
- :mod:`~mefn.data.phantoms.render`: CT, PET and labels on a grid;
- :mod:`~mefn.data.phantoms.study`: :func:`generate_study`, one study from a seed;
- :mod:`~mefn.data.phantoms.layouts`: sets of studies written as AutoPET, nnU-Net, HECKTOR;
- :mod:`~mefn.data.phantoms.cache`: sets written straight into the training cache
  (import it from there: it is not loaded with this package).

:mod:`~mefn.data.phantoms.streams` names the random-number streams: a seed always gives
the same study. The names below are the package's public interface.
"""

from __future__ import annotations

from mefn.data.phantoms.layouts import (
    LAYOUTS,
    WrittenStudy,
    case_name,
    study_seed,
    write_phantoms,
    write_study,
)
from mefn.data.phantoms.render import PhantomScene, render_ct, render_labels
from mefn.data.phantoms.study import (
    KINDS,
    PhantomOptions,
    PhantomStudy,
    generate_study,
    study_layers,
)

__all__ = [
    "KINDS",
    "LAYOUTS",
    "PhantomOptions",
    "PhantomScene",
    "PhantomStudy",
    "WrittenStudy",
    "case_name",
    "generate_study",
    "render_ct",
    "render_labels",
    "study_layers",
    "study_seed",
    "write_phantoms",
    "write_study",
]
