"""Tests of lab_utils.evaluation.active_units: Burda et al. (2016)'s count finds the
dimensions whose posterior mean moves with the image, and only those."""
from __future__ import annotations

import pytest
import torch

from lab_utils.evaluation import active_from_means, active_units, unit_activity
from lab_utils.model import CVAE


def _images(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_activity_is_the_variance_of_mu_over_the_images():
    torch.manual_seed(0)
    model = CVAE("lab").eval()
    x, y = _images()
    with torch.no_grad():
        mu, _ = model.encode(x, y)  # (64, 20)
    expected = ((mu - mu.mean(0)) ** 2).mean(0)  # (20,)
    assert torch.allclose(unit_activity(model, x, y, batch_size=16), expected, atol=1e-6)


def test_dimensions_whose_mean_ignores_the_image_are_inactive():
    torch.manual_seed(0)
    model = CVAE("lab").eval()
    with torch.no_grad():
        model.encoder.fc_mu.weight[5:].zero_()  # mu_j = bias_j for j >= 5: the same for every image
        model.encoder.fc_mu.weight[:5].mul_(50.0)  # the first five move a lot with the image
    x, y = _images()
    assert active_units(model, x, y) == [0, 1, 2, 3, 4]
    assert active_units(model, x, y, threshold=float("inf")) == []


def test_plain_vae_ignores_labels():
    torch.manual_seed(0)
    model = CVAE("lab-vae").eval()
    x, y = _images(32)
    assert torch.equal(unit_activity(model, x, y), unit_activity(model, x, None))


def test_the_count_from_codes_agrees_with_the_count_from_the_model(mnist_test):
    """active_from_means (notebook 08's exercise reference) is active_units on codes
    already computed: the shipped lab model, 1,000 real test digits."""
    from lab_utils import load_pretrained

    lab_model = load_pretrained("lab")
    x, y = mnist_test[0][:1000], mnist_test[1][:1000]
    with torch.no_grad():
        mu, _ = lab_model.encode(x, y)  # (1000, 20)
    used = active_from_means(mu)
    assert used == active_units(lab_model, x, y)
    assert 5 <= len(used) < 20  # the shipped lab model leaves some units collapsed
    assert active_from_means(mu, threshold=float("inf")) == []


def test_codes_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"mu must be \(N, D\)"):
        active_from_means(torch.zeros(4, 2, 3))
