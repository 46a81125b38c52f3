"""Tests of lab_utils.evaluation.label_probe: it finds a label that is there, not one that is not."""
from __future__ import annotations

import torch

from lab_utils.evaluation import label_probe


def _clusters(n: int, seed: int, spread: float = 0.3):
    """Ten Gaussian clusters in 5 dimensions: the label is in the features."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)  # (n,)
    centres = torch.randn(10, 5, generator=torch.Generator().manual_seed(99))  # (10, 5)
    return centres[y] + spread * torch.randn(n, 5, generator=g), y  # (n, 5), (n,)


def test_probe_reads_a_label_that_is_in_the_features():
    f, y = _clusters(2000, seed=0)
    f_test, y_test = _clusters(1000, seed=1)
    assert label_probe(f, y, f_test, y_test) > 0.95
    assert label_probe(f, y, f_test, y_test, hidden=32) > 0.95


def test_probe_is_at_chance_when_the_features_carry_no_label():
    g = torch.Generator().manual_seed(0)
    f, f_test = torch.randn(2000, 5, generator=g), torch.randn(1000, 5, generator=g)
    y, y_test = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (1000,), generator=g)
    for hidden in (0, 32):
        assert abs(label_probe(f, y, f_test, y_test, hidden=hidden) - 0.1) < 0.05


def test_mlp_probe_finds_what_no_hyperplane_separates():
    # The label is the ring a point lies on: no linear probe reads it, a small MLP does.
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (3000,), generator=g)
    angle = 2 * torch.pi * torch.rand(3000, generator=g)
    radius = 1.0 + y.float() + 0.1 * torch.randn(3000, generator=g)
    f = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)  # (3000, 2)
    linear = label_probe(f[:2000], y[:2000], f[2000:], y[2000:])
    mlp = label_probe(f[:2000], y[:2000], f[2000:], y[2000:], hidden=64, steps=1500)
    assert mlp > linear + 0.3


def test_probe_is_seeded_and_leaves_the_global_rng_and_threads_alone():
    f, y = _clusters(500, seed=0, spread=1.5)
    f_test, y_test = _clusters(500, seed=1, spread=1.5)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    a = label_probe(f, y, f_test, y_test, hidden=16, seed=3)
    after = torch.rand(1)
    assert torch.get_num_threads() == threads
    assert a == label_probe(f, y, f_test, y_test, hidden=16, seed=3)
    assert torch.equal(before, after)
