"""train: the loop lowers the loss, logs every 10 batches, resumes, and has a CLI."""
import pytest
import torch

from lab_utils.checkpoints import load_checkpoint, read_checkpoint
from lab_utils.model import CVAE
from lab_utils.evaluation import silent_digits
from lab_utils.train import History, TrainConfig, evaluate, fit, initialise, main, train


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
    history = train(model, x, y, cfg, x_test=xt, y_test=yt, progress=False, verbose=False)
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
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
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


def test_train_takes_its_settings_by_keyword(tiny_data):
    x, y, xt, yt = tiny_data
    with pytest.raises(TypeError):
        train(CVAE("lab"), x, y, TrainConfig(epochs=1), xt, yt)


def test_a_checkpoint_config_from_before_the_new_fields_reads_as_it_was_trained():
    old = {"model": "lab", "epochs": 120, "batch_size": 128, "lr": 0.001, "seed": 1,
           "log_every": 10, "dataset": "mnist", "train_size": None, "test_size": None,
           "channels_last": True, "lr_schedule": "constant"}
    cfg = TrainConfig.from_dict(old)
    assert (cfg.warmup_steps, cfg.fast, cfg.init) == (0, False, "pytorch")
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({**old, "learning_rate": 0.1})
    assert TrainConfig.from_dict({**old, "decay_epochs": None}) == cfg  # removed, was off
    with pytest.raises(ValueError, match="no longer has"):
        TrainConfig.from_dict({**old, "decay_epochs": 30})
    with pytest.raises(ValueError, match="unknown History fields"):
        History.from_dict({"step": [0], "loss": [1.0], "losses": [1.0]})


def test_label_neutral_start_zeroes_the_label_kernels_and_opens_the_relus():
    torch.manual_seed(0)
    model = initialise(CVAE("lab"), "label-neutral")
    first, second = model.encoder.conv[0], model.encoder.conv[2]
    assert torch.count_nonzero(first.weight[:, 1:]) == 0  # the 10 label channels
    assert torch.count_nonzero(first.weight[:, :1]) == first.weight[:, :1].numel()  # the image's
    assert torch.all(first.bias == 0.1) and torch.all(second.bias == 0.1)
    with pytest.raises(ValueError, match="init must be one of"):
        initialise(model, "xavier")


@pytest.mark.parametrize("name", ["lab", "lab-vae", "wide"])
def test_open_relus_start_is_label_neutral_plus_open_decoder_relus(name):
    """The default start: label-neutral, and every decoder layer a ReLU follows
    starts with bias 0.1; every other weight is PyTorch's draw for the seed."""
    torch.manual_seed(7)
    reference = CVAE(name)
    torch.manual_seed(7)
    neutral = initialise(CVAE(name), "label-neutral")
    torch.manual_seed(7)
    model = initialise(CVAE(name), "open-relus")
    assert TrainConfig().init == "open-relus"
    dec = [m for m in model.decoder.conv if isinstance(m, torch.nn.Conv2d)]
    opened = {id(m.bias) for m in (model.decoder.fc[0], *dec[:-1])}
    assert len(opened) == 1 + len(model.config.dec_channels)  # lab: Linear(30, 392), Conv(2, 11), Conv(11, 3)
    for (key, p), n, r in zip(model.named_parameters(), neutral.parameters(), reference.parameters()):
        if id(p) in opened:
            assert torch.all(p == 0.1), key
            assert not torch.all(n == 0.1), key  # label-neutral leaves the decoder alone
        else:
            assert torch.equal(p, n), key
    assert torch.equal(dec[-1].bias, [m for m in reference.decoder.conv
                                      if isinstance(m, torch.nn.Conv2d)][-1].bias)  # before the sigmoid
    assert torch.equal(model.encoder.fc[0].bias, reference.encoder.fc[0].bias)


@pytest.mark.parametrize("seed", [2, 4, 5])
def test_seeds_that_start_with_silent_digits_start_healthy_label_neutral(seed, mnist_test):
    """With PyTorch's default initialisation these seeds have silent digits before
    the first step (seed 2: nine of them); the label-neutral start has none."""
    x, y = mnist_test
    x, y = x[:2000], y[:2000]
    torch.manual_seed(seed)
    default = CVAE("lab")
    assert silent_digits(default, x, y), "expected silent digits at PyTorch's initialisation"
    torch.manual_seed(seed)
    neutral = initialise(CVAE("lab"), "label-neutral")
    assert silent_digits(neutral, x, y) == []


def test_fit_starts_from_the_configured_initialisation(tiny_data):
    x, y, xt, yt = tiny_data
    data = (x[:128], y[:128], xt[:100], yt[:100])
    for init in ("open-relus", "label-neutral", "pytorch"):
        cfg = TrainConfig(epochs=0, init=init, seed=3)
        model, _ = fit(cfg, device="cpu", progress=False, data=data)
        torch.manual_seed(3)
        expected = initialise(CVAE("lab"), init)
        for (k, a), b in zip(model.state_dict().items(), expected.state_dict().values()):
            torch.testing.assert_close(a, b, msg=k)


def test_the_fast_and_plain_routes_train_alike(tiny_data):
    """Same seed, same batches, same noise: the two routes' loss curves agree to
    float32 tolerance (they differ only in the order of the sums)."""
    x, y, xt, yt = tiny_data
    curves = {}
    for route in (True, False):
        torch.manual_seed(0)
        model = CVAE("lab")
        cfg = TrainConfig(epochs=1, batch_size=64, fast=route)
        h = train(model, x[:640], y[:640], cfg, x_test=xt, y_test=yt, progress=False)
        curves[route] = h.epoch_train_nelbo + h.epoch_test_nelbo
    assert curves[True] == pytest.approx(curves[False], rel=2e-4)


def test_a_step_function_trains_exactly_as_the_plain_route(tiny_data, tmp_path):
    """``step=`` (notebook 05 trains with the student's train_step): the reference
    step through it gives the same run as ``fast=False``, bit for bit, and the
    checkpoint records the route it took."""
    from dataclasses import replace

    from lab_utils.train import train_step

    x, y, xt, yt = tiny_data
    data = (x[:640], y[:640], xt[:200], yt[:200])
    cfg = TrainConfig(epochs=1, batch_size=64)  # fast=True: ignored when a step is given
    calls = []

    def counting_step(model, optimizer, xb, yb):
        calls.append(xb.shape[0])
        return train_step(model, optimizer, xb, yb)

    ckpt = tmp_path / "step.pt"
    stepped, h_step = fit(cfg, out=ckpt, device="cpu", progress=False, data=data,
                          step=counting_step)
    plain, h_plain = fit(replace(cfg, fast=False), device="cpu", progress=False, data=data)
    assert calls == [64] * 10
    assert h_step.loss == h_plain.loss and h_step.epoch_test_nelbo == h_plain.epoch_test_nelbo
    for (k, a), b in zip(stepped.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), k
    assert read_checkpoint(ckpt)["train_config"]["fast"] is False
