"""Predictor settings that the CLI tests do not reach directly."""

from __future__ import annotations

import SimpleITK as sitk
import torch
from support import make_tiny_weights

from mefn.inference import Predictor


def test_threads_limit_torch_and_simpleitk(tmp_path) -> None:
    before = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    try:
        Predictor(make_tiny_weights(tmp_path), device="cpu", threads=1)
        assert torch.get_num_threads() == 1
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1
    finally:
        torch.set_num_threads(before[0])
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before[1])
