"""losses: BCE, closed-form KL (vs Monte Carlo and torch.distributions), IWAE."""
import math

import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence as torch_kl

from lab_utils.checkpoints import load_pretrained
from lab_utils.losses import bce, iwae_bound, kl_divergence, loss_function, negative_elbo


def test_bce_is_summed_per_image():
    x = torch.rand(5, 1, 28, 28)
    x_hat = torch.rand(5, 1, 28, 28).clamp(0.01, 0.99)
    per_image = bce(x_hat, x)
    assert per_image.shape == (5,)
    total = F.binary_cross_entropy(x_hat, x, reduction="sum")
    torch.testing.assert_close(per_image.sum(), total)


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(8, 20), torch.randn(8, 20)
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl_divergence(mu, logvar), torch_kl(q, p).sum(1))


def test_kl_matches_a_monte_carlo_estimate():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 20) * 0.7, torch.randn(4, 20) * 0.5
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(50_000, 4, 20)  # (S, B, D)
    log_q = Normal(mu, std).log_prob(z).sum(-1)
    log_p = Normal(0.0, 1.0).log_prob(z).sum(-1)
    mc = (log_q - log_p).mean(0)  # (B,)
    closed = kl_divergence(mu, logvar)
    # Monte Carlo error ~ std / sqrt(S): a few hundredths of a nat here
    assert torch.allclose(mc, closed, atol=0.1), (mc, closed)


def test_kl_is_zero_for_the_prior():
    assert torch.all(kl_divergence(torch.zeros(3, 20), torch.zeros(3, 20)) == 0)


def test_negative_elbo_and_loss(lab_model, small_batch):
    x, y = small_batch
    torch.manual_seed(0)
    x_hat, mu, logvar = lab_model(x, y)
    per_image = negative_elbo(x_hat, x, mu, logvar)
    assert per_image.shape == (64,)
    torch.testing.assert_close(per_image, bce(x_hat, x) + kl_divergence(mu, logvar))
    torch.testing.assert_close(loss_function(x_hat, x, mu, logvar), per_image.sum())
    # An untrained decoder outputs about 0.5 everywhere: BCE near 784 * log 2 = 543 nats
    assert 400 < per_image.mean().item() < 700


def test_iwae_k1_is_a_one_sample_elbo(lab_model, small_batch):
    x, y = small_batch
    with torch.no_grad():
        torch.manual_seed(3)
        k1 = iwae_bound(lab_model, x, y, k=1)
        torch.manual_seed(3)
        mu, logvar = lab_model.encode(x, y)
        z = lab_model.reparameterize(mu, logvar)
        x_hat = lab_model.decode(z, y)
        std = torch.exp(0.5 * logvar)
        log_q = Normal(mu, std).log_prob(z).sum(1)
        log_p = Normal(0.0, 1.0).log_prob(z).sum(1)
        one_sample = bce(x_hat, x) + log_q - log_p
    torch.testing.assert_close(k1, one_sample, rtol=1e-4, atol=1e-3)


def test_iwae_tightens_with_k(mnist_test):
    # A trained model: its posterior differs from the prior, so more samples help.
    # The bound tightens in expectation; each estimate is random, so the mean is
    # taken over 256 images (with 16, one draw of k=1 can land below k=10).
    model = load_pretrained()
    x, y = mnist_test[0][:256], mnist_test[1][:256]
    with torch.no_grad():
        torch.manual_seed(0)
        means = [iwae_bound(model, x, y, k=k).mean().item() for k in (1, 10, 100)]
    assert means[0] > means[1] > means[2]
    assert means[0] - means[2] > 1.0  # nats: a real tightening, not noise
    assert not math.isnan(means[2])
