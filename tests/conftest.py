"""Shared fixtures: a small slice of real MNIST, loaded once per session."""
from __future__ import annotations

import pytest
import torch

from lab_utils.data import load_mnist


@pytest.fixture(scope="session")
def mnist_test():
    """The real MNIST test split (10,000 images), loaded once."""
    return load_mnist("test", download=False)


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
