"""train: the loop lowers the loss, logs every 10 batches, resumes, and has a CLI."""
import pytest
import torch

from lab_utils.checkpoints import load_checkpoint, read_checkpoint
from lab_utils.model import CVAE
from lab_utils.train import History, TrainConfig, evaluate, fit, main, train


@pytest.fixture(scope="module")
def tiny_data(mnist_test):
    x, y = mnist_test
    return x[:1280], y[:1280], x[5000:5500], y[5000:5500]


def test_a_short_run_lowers_the_loss(tiny_data):
    x, y, xt, yt = tiny_data
    torch.manual_seed(0)
    model = CVAE("lab")
    before = evaluate(model, xt, yt)
    cfg = TrainConfig(epochs=2, batch_size=64)
    history = train(model, x, y, cfg, xt, yt, progress=False, verbose=False)
    after = history.epoch_test_nelbo[-1]
    assert before > 500  # untrained: about 784 * log 2
    assert after < before - 200, (before, after)
    # 1280 / 64 = 20 batches per epoch, logged at batches 0 and 10 of each epoch
    assert history.step == [0, 10, 20, 30]
    assert len(history.loss) == 4 and history.loss[-1] < history.loss[0]
    assert len(history.epoch_seconds) == 2


def test_evaluate_is_repeatable_and_leaves_the_rng_alone(tiny_data):
    _, _, xt, yt = tiny_data
    model = CVAE("lab")
    torch.manual_seed(7)
    a = evaluate(model, xt, yt)
    after_eval = torch.rand(1)
    torch.manual_seed(7)
    b = evaluate(model, xt, yt)
    assert a == b
    torch.manual_seed(7)
    assert torch.equal(torch.rand(1), after_eval)


def test_training_is_reproducible_and_resumes_exactly(tiny_data, tmp_path):
    x, y, xt, yt = tiny_data
    data = (x[:640], y[:640], xt[:200], yt[:200])
    cfg2 = TrainConfig(epochs=2, batch_size=64)
    full, h_full = fit(cfg2, device="cpu", progress=False, data=data)
    ckpt = tmp_path / "run.pt"
    fit(TrainConfig(epochs=1, batch_size=64), out=ckpt, device="cpu", progress=False, data=data)
    assert read_checkpoint(ckpt)["epochs"] == 1
    resumed, h_res = fit(cfg2, out=ckpt, resume=ckpt, device="cpu", progress=False, data=data)
    assert h_res.epoch_test_nelbo == pytest.approx(h_full.epoch_test_nelbo, rel=1e-5)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    saved = read_checkpoint(ckpt)
    assert saved["epochs"] == 2 and saved["optimizer"] is not None
    assert saved["metrics"]["test_nelbo"] == pytest.approx(h_full.epoch_test_nelbo[-1], rel=1e-5)


def test_bad_train_config_is_refused():
    with pytest.raises(ValueError, match="lr must be positive"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="unknown model configuration"):
        TrainConfig(model="giant")
    with pytest.raises(ValueError, match="batch_size must be positive"):
        TrainConfig(batch_size=0)


def test_history_round_trips():
    h = History(step=[0, 10], loss=[500.0, 300.0])
    assert History.from_dict(h.to_dict()) == h


@pytest.mark.mnist
def test_command_line_trains_and_saves(tmp_path, capsys):
    out = tmp_path / "cli.pt"
    rc = main(["--epochs", "1", "--train-size", "512", "--test-size", "256", "--out", str(out),
               "--no-progress", "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "final test negative ELBO" in printed
    model, ckpt = load_checkpoint(out)
    assert ckpt["train_config"]["train_size"] == 512
    assert ckpt["versions"]["torch"] == torch.__version__
    assert not model.training


def test_command_line_refuses_bad_values(capsys):
    assert main(["--epochs", "1", "--lr", "-1"]) == 2
    assert "lr must be positive" in capsys.readouterr().err
