"""The optional cosine learning-rate schedule of lab_utils.train (used by the wide model)."""
from __future__ import annotations

import pytest
import torch

from lab_utils.model import CVAE
from lab_utils.train import TrainConfig, learning_rate, lr_scheduler, train


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
    # 2 epochs of 4 batches: after step 7 of 8 the scheduler holds the rate the
    # next step would use, the end of the decay (0).
    assert optimizer.param_groups[0]["lr"] == pytest.approx(learning_rate(config, 8, 8), abs=1e-12)
    assert learning_rate(config, 7, 8) < 0.05 * config.lr
    assert history.epoch_train_nelbo[1] < history.epoch_train_nelbo[0]


def test_warmup_ramps_linearly_then_holds():
    config = TrainConfig(lr=1e-3, warmup_steps=4)
    assert [learning_rate(config, s, 100) for s in range(6)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_warmup_multiplies_the_cosine_decay():
    config = TrainConfig(lr=1e-3, warmup_steps=10, lr_schedule="cosine")
    cosine = TrainConfig(lr=1e-3, lr_schedule="cosine")
    assert learning_rate(config, 4, 100) == pytest.approx(0.5 * learning_rate(cosine, 4, 100))
    assert learning_rate(config, 50, 100) == pytest.approx(learning_rate(cosine, 50, 100))


@pytest.mark.parametrize("start", [0, 3, 7])
def test_the_scheduler_follows_learning_rate_from_any_start_step(start):
    config = TrainConfig(lr=1e-3, warmup_steps=5, lr_schedule="cosine")
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = lr_scheduler(optimizer, config, total_steps=20, start_step=start)
    for step in range(start, 20):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(learning_rate(config, step, 20))
        optimizer.step()
        scheduler.step()


def test_negative_warmup_is_refused():
    with pytest.raises(ValueError, match="warmup_steps must be at least 0"):
        TrainConfig(warmup_steps=-1)
