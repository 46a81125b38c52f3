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


def _float64_reference(model, x, y, seed):
    """The plain model's loss terms and gradients computed in float64 from a float32
    model, with the noise draw the float32 routes make (float32 eps after
    ``torch.manual_seed(seed)``): what every float32 route should approximate. Sums of
    ~100,000 float32 terms (a bias gradient) can be off in their 4th digit on either
    route, so comparing two float32 routes with each other tests rounding, not the route."""
    import copy

    from lab_utils.losses import bce, kl_divergence

    m = copy.deepcopy(model).double()
    torch.manual_seed(seed)
    eps = torch.randn(x.shape[0], m.config.latent_dim)  # the draw reparameterize makes (float32)
    mu, logvar = m.encoder(x.double(), y)  # (B, D), (B, D)
    z = mu + torch.exp(0.5 * logvar) * eps.double()  # as CVAE.reparameterize computes it
    rec, kl = bce(m.decoder(z, y), x.double()), kl_divergence(mu, logvar)  # (B,), (B,)
    (rec.sum() + kl.sum()).backward()
    return rec.detach(), kl.detach(), {k: p.grad for k, p in m.named_parameters()}


@pytest.fixture(scope="session")
def float64_reference():
    """``f(model, x, y, seed) -> (rec, kl, grads)``: see :func:`_float64_reference`."""
    return _float64_reference
