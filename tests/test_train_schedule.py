"""The optional cosine learning-rate schedule of lab_utils.train (used by the wide model)."""
from __future__ import annotations

import pytest
import torch

from lab_utils.model import CVAE
from lab_utils.train import TrainConfig, learning_rate, train


def test_constant_schedule_keeps_the_learning_rate():
    config = TrainConfig(lr=2e-3)
    assert [learning_rate(config, s, 100) for s in (0, 50, 99)] == [2e-3] * 3


def test_cosine_schedule_decays_from_lr_to_zero():
    config = TrainConfig(lr=2e-3, lr_schedule="cosine")
    assert learning_rate(config, 0, 100) == pytest.approx(2e-3)
    assert learning_rate(config, 50, 100) == pytest.approx(1e-3)
    assert learning_rate(config, 100, 100) == pytest.approx(0.0, abs=1e-12)
    values = [learning_rate(config, s, 100) for s in range(101)]
    assert values == sorted(values, reverse=True)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")


def test_cosine_run_sets_the_optimizer_lr_each_step(mnist_test):
    x, y = mnist_test
    config = TrainConfig(epochs=2, batch_size=64, lr=1e-3, lr_schedule="cosine")
    torch.manual_seed(0)
    model = CVAE("lab")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = train(model, x[:256], y[:256], config, optimizer=optimizer)
    # 2 epochs of 4 batches: the last step is 7 of 8, near the end of the decay.
    assert optimizer.param_groups[0]["lr"] == pytest.approx(learning_rate(config, 7, 8))
    assert optimizer.param_groups[0]["lr"] < 0.05 * config.lr
    assert history.epoch_train_nelbo[1] < history.epoch_train_nelbo[0]
