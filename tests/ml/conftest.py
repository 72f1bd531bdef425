"""Shared fixtures for the algorithm-module tests: small, fast, deterministic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REAL_DATA = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "default_of_credit_card_clients.csv"
)


def make_binary_data(n_rows: int = 400, n_features: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with a learnable (noisy, linear) relation to a 0/1 label."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_rows, n_features))
    score = 1.5 * features[:, 0] - features[:, 1] + rng.normal(scale=0.7, size=n_rows)
    labels = (score > 0.4).astype(np.int64)
    return features, labels


@pytest.fixture
def binary_data() -> tuple[np.ndarray, np.ndarray]:
    return make_binary_data()


@pytest.fixture
def real_data_path() -> Path:
    if not REAL_DATA.is_file():
        pytest.skip(f"real data not present at {REAL_DATA}")
    return REAL_DATA
