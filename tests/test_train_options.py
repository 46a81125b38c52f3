"""Training options of issue 14: beta (the KL weight), dynamic binarization, a validation split."""
import pytest
import torch

from lab_utils import fast
from lab_utils.losses import bce, kl_divergence, loss_function
from lab_utils.model import CVAE
from lab_utils.train import (TrainConfig, batch_loss, binarize_fixed, evaluate, fit, initialise,
                             main, parse_args, split_validation, train)


@pytest.fixture(scope="module")
def tiny_data(mnist_test):
    x, y = mnist_test
    return x[:640], y[:640], x[5000:5200], y[5000:5200]


@pytest.fixture
def model_and_batch(mnist_test):
    torch.manual_seed(0)
    model = initialise(CVAE("lab"))
    x, y = mnist_test
    return model, x[:64], y[:64]


def test_beta_one_is_the_lab_reports_loss_bit_for_bit(model_and_batch):
    model, x, y = model_and_batch
    torch.manual_seed(3)
    x_hat, mu, logvar = model(x, y)
    expected = loss_function(x_hat, x, mu, logvar)
    torch.manual_seed(3)
    assert torch.equal(batch_loss(model, x, y, fast_route=False, beta=1.0), expected)


@pytest.mark.parametrize("fast_route", [False, True])
def test_beta_weights_the_kl_term_only(model_and_batch, fast_route):
    model, x, y = model_and_batch
    torch.manual_seed(5)
    x_hat, mu, logvar = model(x, y)
    reconstruction, kl = bce(x_hat, x).sum(), kl_divergence(mu, logvar).sum()
    for beta in (0.0, 0.25, 4.0):
        torch.manual_seed(5)  # the same noise draw
        loss = batch_loss(model, x, y, fast_route=fast_route, beta=beta)
        torch.testing.assert_close(loss, reconstruction + beta * kl, rtol=1e-5, atol=1e-3)
    assert kl.item() > 1.0  # the test can tell beta's weight apart


def test_fast_loss_terms_match_the_plain_ones(model_and_batch):
    model, x, y = model_and_batch
    torch.manual_seed(9)
    r_fast, kl_fast = fast.loss_terms(model, x, y)
    torch.manual_seed(9)
    x_hat, mu, logvar = model(x, y)
    torch.testing.assert_close(r_fast, bce(x_hat, x), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(kl_fast, kl_divergence(mu, logvar), rtol=1e-5, atol=1e-4)


def test_a_large_beta_trains_a_lower_rate(tiny_data):
    x, y, xt, yt = tiny_data
    rates = {}
    for beta in (0.25, 4.0):
        torch.manual_seed(0)
        model = initialise(CVAE("lab"))
        train(model, x, y, TrainConfig(epochs=3, batch_size=64, beta=beta),
              progress=False, verbose=False)
        with torch.no_grad():
            mu, logvar = model.encoder(xt, yt)
            rates[beta] = kl_divergence(mu, logvar).mean().item()
    # more weight on the KL, fewer nats through z
    assert rates[4.0] < 0.5 * rates[0.25], rates


def test_validation_split_is_disjoint_repeatable_and_sized():
    x = torch.arange(100, dtype=torch.float32).view(100, 1, 1, 1)  # each image its own index
    y = torch.arange(100) % 10
    xt, yt, xv, yv = split_validation(x, y, 20, seed=3)
    assert xt.shape[0] == 80 and xv.shape[0] == 20
    train_ids, val_ids = set(xt.flatten().tolist()), set(xv.flatten().tolist())
    assert not train_ids & val_ids and len(train_ids | val_ids) == 100
    assert torch.equal(yv, xv.flatten().long() % 10)  # labels travel with their images
    assert torch.equal(split_validation(x, y, 20, seed=3)[2], xv)
    assert not torch.equal(split_validation(x, y, 20, seed=4)[2], xv)
    same = split_validation(x, y, 0)
    assert torch.equal(same[0], x) and same[2].shape[0] == 0
    with pytest.raises(ValueError, match="leaves no training images"):
        split_validation(x, y, 100)


def test_fit_selects_on_a_validation_split(tiny_data):
    x, y, xt, yt = tiny_data
    cfg = TrainConfig(epochs=2, batch_size=64, val_size=128)
    model, history = fit(cfg, device="cpu", progress=False, data=(x, y, xt, yt))
    assert len(history.epoch_val_nelbo) == 2 and len(history.epoch_test_nelbo) == 2
    _, _, xv, yv = split_validation(x, y, 128, seed=cfg.seed)
    assert history.epoch_val_nelbo[-1] == pytest.approx(evaluate(model, xv, yv, fast_route=True), rel=1e-6)
    assert history.epoch_val_nelbo[-1] != history.epoch_test_nelbo[-1]


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # the stub step takes no optimizer step
def test_binarize_draws_fresh_binary_batches(tiny_data):
    x, y, _, _ = tiny_data
    seen = []

    def step(model, optimizer, xb, yb):
        seen.append(xb.clone())
        return 0.0

    model = CVAE("lab")
    cfg = TrainConfig(epochs=2, batch_size=640, binarize=True)
    train(model, x, y, cfg, step=step, progress=False, verbose=False)
    first, second = seen  # one batch per epoch, the same 640 images in another order
    assert set(first.unique().tolist()) == {0.0, 1.0}
    # Bernoulli(grey): the mean ink stays the grey images' mean, within sampling error
    assert first.mean().item() == pytest.approx(x.mean().item(), abs=0.005)
    assert not torch.equal(first.sum(0), second.sum(0))  # each epoch a fresh draw


def test_fixed_binarization_is_repeatable(mnist_test):
    x = mnist_test[0][:500]
    a, b = binarize_fixed(x, seed=1), binarize_fixed(x, seed=1)
    assert torch.equal(a, b) and set(a.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(a, binarize_fixed(x, seed=2))
    assert torch.equal(a[x == 0], x[x == 0]) and torch.all(a[x == 1] == 1)


def test_old_checkpoints_read_as_trained_and_bad_values_are_refused():
    old = TrainConfig.from_dict({"model": "lab", "epochs": 3})
    assert (old.beta, old.binarize, old.val_size) == (1.0, False, 0)
    with pytest.raises(ValueError, match="beta must be 0 or more"):
        TrainConfig(beta=-1.0)
    with pytest.raises(ValueError, match="val_size must be 0 or more"):
        TrainConfig(val_size=-5)


def test_a_step_function_refuses_a_beta_it_would_ignore(tiny_data):
    x, y, _, _ = tiny_data
    with pytest.raises(ValueError, match="beta=2.0 would be ignored"):
        train(CVAE("lab"), x, y, TrainConfig(epochs=1, beta=2.0),
              step=lambda *a: 0.0, progress=False, verbose=False)


def test_command_line_options():
    args = parse_args(["--beta", "0.5", "--binarize", "--val-size", "5000"])
    assert (args.beta, args.binarize, args.val_size) == (0.5, True, 5000)
    assert main(["--beta", "-2", "--epochs", "1"]) == 2


def test_rate_plus_distortion_is_the_negative_elbo(mnist_test):
    from lab_utils import load_pretrained
    from lab_utils.evaluation import negative_elbo_on, rate_distortion
    lab_model = load_pretrained("lab", device="cpu")
    x, y = mnist_test[0][:300], mnist_test[1][:300]
    rd = rate_distortion(lab_model, x, y, batch_size=128)
    assert rd["rate"] + rd["distortion"] == pytest.approx(
        negative_elbo_on(lab_model, x, y, batch_size=128), abs=1e-3)
    # the shipped lab model: tens of nats of rate, the rest is distortion
    assert 10 < rd["rate"] < 40 and 50 < rd["distortion"] < 100, rd


def test_kl_warmup_ramps_the_kl_weight_linearly_then_holds_beta():
    from lab_utils.train import kl_weight

    cfg = TrainConfig(kl_warmup_steps=4, beta=2.0)
    assert [kl_weight(cfg, s) for s in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert kl_weight(TrainConfig(), 0) == 1.0  # default: the ELBO from the first step
    with pytest.raises(ValueError, match="kl_warmup_steps must be at least 0"):
        TrainConfig(kl_warmup_steps=-1)
    assert TrainConfig.from_dict({"model": "lab"}).kl_warmup_steps == 0  # an old checkpoint
    assert parse_args(["--kl-warmup-steps", "100"]).kl_warmup_steps == 100


def test_kl_warmup_changes_only_the_first_steps(tiny_data):
    """One warm-up step weighs the KL by 1/1: the default run, bit for bit; four steps
    change the start, so the losses of the first batches differ."""
    x, y = tiny_data[0], tiny_data[1]
    runs = {}
    for steps in (0, 1, 4):
        torch.manual_seed(0)
        model = initialise(CVAE("lab"))
        h = train(model, x, y, TrainConfig(epochs=1, batch_size=64, log_every=1, kl_warmup_steps=steps),
                  progress=False, verbose=False)
        runs[steps] = h.loss
    assert runs[1] == runs[0]
    assert runs[4][0] < runs[0][0]  # the first batch's loss counts a quarter of its KL


def test_a_step_function_refuses_a_kl_warmup_it_would_ignore(tiny_data):
    from lab_utils.train import train_step

    x, y = tiny_data[0], tiny_data[1]
    with pytest.raises(ValueError, match="kl_warmup_steps=10 would be ignored"):
        train(initialise(CVAE("lab")), x, y, TrainConfig(epochs=1, kl_warmup_steps=10),
              progress=False, verbose=False, step=train_step)
