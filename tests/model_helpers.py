"""Shared test helpers for the model, feature and NeMo-import tests."""

import os
from pathlib import Path

import pytest
import torch


def nemo_fixture_dir() -> Path:
    """shared/fixtures/nemo (the QNET_FIXTURES environment variable overrides the fixtures root);
    skips the test when it is absent."""
    here = Path(__file__).resolve().parent
    candidates = [
        Path(os.environ.get("QNET_FIXTURES", "/nonexistent")) / "nemo",
        here / "fixtures" / "nemo",
        here.parents[1] / "shared" / "fixtures" / "nemo",
        Path("/work/shared/fixtures/nemo"),
    ]
    for c in candidates:
        if (c / "qn5x5_io.pt").is_file() and (c / "qn5x5_random.nemo").is_file():
            return c
    pytest.skip("NeMo fixture (shared/fixtures/nemo) not found; set QNET_FIXTURES")


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give BatchNorms non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=gen)
            m.bias.data = 0.3 * torch.randn(n, generator=gen)
            m.running_mean = 0.3 * torch.randn(n, generator=gen)
            m.running_var = 0.5 + torch.rand(n, generator=gen)
