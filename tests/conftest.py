"""Shared fixtures: real MNIST (and Fashion-MNIST), loaded once per session.

Without MNIST the run stops before any test with one message (../conftest.py).
"""
from __future__ import annotations

import pytest
import torch

from lab_utils.data import load_mnist


@pytest.fixture(scope="session")
def mnist_test():
    """The real MNIST test split (10,000 images), loaded once."""
    return load_mnist("test", download=False)


@pytest.fixture(scope="session")
def fashion_mnist_test():
    """The Fashion-MNIST test split; skips (one reason line) when it is not installed."""
    from lab_utils.data import data_root, missing_files

    if missing_files("fashion-mnist"):
        pytest.skip(
            "Fashion-MNIST not installed: apt-get install dataset-fashion-mnist, "
            f"or put its four files in {data_root() / 'FashionMNIST' / 'raw'}/"
        )
    return load_mnist("test", dataset="fashion-mnist", download=False)


@pytest.fixture(scope="session")
def small_batch(mnist_test):
    """64 real test digits with their labels."""
    x, y = mnist_test
    return x[:64].clone(), y[:64].clone()


@pytest.fixture
def lab_model():
    torch.manual_seed(0)
    from lab_utils.model import CVAE

    return CVAE("lab")
