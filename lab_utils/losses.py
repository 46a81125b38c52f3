"""The VAE objective: reconstruction (BCE) + KL, per image, and the IWAE bound.

All functions return one number per image (nats), so a batch's loss is their
sum (as in the lab report and pytorch/examples) and a report is their mean.
Taught in ``03_reparameterization.ipynb`` (KL), ``05_training.ipynb``
(negative ELBO) and ``07_likelihood.ipynb`` (IWAE).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bce(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction term -log p(x | z): binary cross-entropy summed over pixels.

    (B, 1, 28, 28) x2 -> (B,). Each pixel is a Bernoulli whose mean is the
    decoder's Sigmoid output, which is why Sigmoid and BCE go together.
    """
    per_pixel = F.binary_cross_entropy(x_hat, x, reduction="none")  # (B, 1, 28, 28)
    return per_pixel.flatten(1).sum(1)  # (B, 1, 28, 28) -> (B, 784) -> (B,)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, sigma^2) || N(0, I) ) in closed form, summed over latent dims.

    (B, D) x2 -> (B,). Appendix B of Kingma & Welling (2014):
    -1/2 * sum(1 + log sigma^2 - mu^2 - sigma^2).
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def negative_elbo(
    x_hat: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """Negative ELBO per image (B,): BCE + KL, an upper bound on -log p(x | y)."""
    return bce(x_hat, x) + kl_divergence(mu, logvar)


def loss_function(
    x_hat: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """The training loss of a batch: the sum of the per-image negative ELBOs."""
    return negative_elbo(x_hat, x, mu, logvar).sum()


def _gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last axis."""
    return -0.5 * (
        math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()
    ).sum(-1)


def iwae_from_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """The IWAE bound on log p(x | y) per image from its log importance weights.

    (K, B) -> (B,). ``log_w[k, b] = log p(x_b, z_k | y_b) - log q(z_k | x_b, y_b)``
    for K draws z_k ~ q(z | x_b, y_b); the bound is log (1/K) sum_k w_k
    (Burda et al., 2016) = logsumexp over K minus log K. ``logsumexp`` subtracts
    the largest log weight before exponentiating: the log weights of an MNIST
    digit lie a hundred nats or more below 0, and in float32 exp(-104) is
    already 0, so log(mean(exp(log_w))) would give -inf (taught in
    ``07_likelihood.ipynb``, whose exercise writes it).
    """
    K = log_w.shape[0]
    return torch.logsumexp(log_w, dim=0) - math.log(K)  # (K, B) -> (B,)


def iwae_bound(model, x: torch.Tensor, y: torch.Tensor | None, k: int = 1) -> torch.Tensor:
    """Importance-weighted estimate of -log p(x | y) per image (B,), with k samples.

    -log (1/k) sum_i p(x | z_i, y) p(z_i) / q(z_i | x, y), z_i ~ q(z | x, y)
    (Burda et al., 2016). k = 1 is a one-sample ELBO; the bound tightens
    (decreases) towards -log p(x | y) as k grows.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    mu, logvar = model.encode(x, y)  # (B, D) each
    B, D = mu.shape
    mu_k = mu.unsqueeze(0).expand(k, B, D)  # (B, D) -> (k, B, D)
    logvar_k = logvar.unsqueeze(0).expand(k, B, D)  # (B, D) -> (k, B, D)
    z = model.reparameterize(mu_k, logvar_k)  # (k, B, D)
    y_k = None if y is None else y.repeat(k)  # (B,) -> (k*B,)
    x_hat = model.decode(z.reshape(k * B, D), y_k)  # (k*B, D) -> (k*B, 1, 28, 28)
    x_k = x.unsqueeze(0).expand(k, *x.shape).reshape(k * B, *x.shape[1:])  # (B, ...) -> (k*B, ...)
    log_px = -bce(x_hat, x_k).view(k, B)  # (k*B,) -> (k, B)
    log_pz = _gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))  # (k, B)
    log_qz = _gaussian_log_prob(z, mu_k, logvar_k)  # (k, B)
    log_w = log_px + log_pz - log_qz  # (k, B)
    return -iwae_from_log_weights(log_w)  # (B,)
