"""model: the lab CVAE, layer for layer as in the lab report, with validated inputs."""
import pytest
import torch
from torch import nn

from lab_utils.model import CONFIGS, CVAE, CVAEConfig, count_parameters, eval_mode, get_config


def test_lab_model_has_the_seed_parameter_count(lab_model):
    assert count_parameters(lab_model) == 343_057
    assert count_parameters(lab_model.encoder) == 330_368
    assert count_parameters(lab_model.decoder) == 12_689


def test_lab_layers_are_the_seed_layers(lab_model):
    enc, dec = lab_model.encoder, lab_model.decoder
    convs = [m for m in enc.conv if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (11, 3, (3, 3), (1, 1), (1, 1)), (3, 1, (3, 3), (1, 1), (1, 1))]
    assert (enc.fc[0].in_features, enc.fc[0].out_features) == (784, 400)
    assert (enc.fc_mu.in_features, enc.fc_mu.out_features) == (400, 20)
    assert (enc.fc_logvar.in_features, enc.fc_logvar.out_features) == (400, 20)
    assert (dec.fc[0].in_features, dec.fc[0].out_features) == (30, 392)
    kinds = [type(m).__name__ for m in dec.conv]
    assert kinds == ["Conv2d", "ReLU", "UpsamplingNearest2d", "Conv2d", "ReLU", "Conv2d", "Sigmoid"]
    dconvs = [m for m in dec.conv if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in dconvs] == [(2, 11), (11, 3), (3, 1)]


def test_shapes_through_the_model(lab_model, small_batch):
    x, y = small_batch
    mu, logvar = lab_model.encode(x, y)
    assert mu.shape == logvar.shape == (64, 20)
    z = lab_model.reparameterize(mu, logvar)
    assert z.shape == (64, 20)
    x_hat = lab_model.decode(z, y)
    assert x_hat.shape == (64, 1, 28, 28)
    assert 0 <= x_hat.min() and x_hat.max() <= 1
    x_hat2, mu2, _ = lab_model(x, y)
    assert x_hat2.shape == x.shape and torch.equal(mu2, mu)


def test_reparameterize_is_mu_plus_sigma_eps(lab_model):
    mu, logvar = torch.full((4, 20), 2.0), torch.full((4, 20), 2 * torch.log(torch.tensor(3.0)))
    torch.manual_seed(1)
    z = lab_model.reparameterize(mu, logvar)
    torch.manual_seed(1)
    eps = torch.randn(4, 20)
    torch.testing.assert_close(z, 2.0 + 3.0 * eps)


def test_sample_gives_one_image_per_label(lab_model):
    images = lab_model.sample(torch.arange(10))
    assert images.shape == (10, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    a = lab_model.sample(torch.tensor([3, 3]), generator=g)
    g = torch.Generator().manual_seed(0)
    b = lab_model.sample(torch.tensor([3, 3]), generator=g)
    assert torch.equal(a, b)
    z = torch.zeros(1, 20)
    assert torch.equal(lab_model.sample(torch.tensor([5]), z=z), lab_model.decode(z, torch.tensor([5])))


def test_the_label_changes_the_decoded_image(lab_model):
    z = torch.zeros(2, 20)
    out = lab_model.decode(z, torch.tensor([0, 1]))
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize(
    "x, y, message",
    [
        (torch.rand(2, 28, 28), torch.tensor([1, 2]), r"shape \(B, 1, 28, 28\).*unsqueeze"),
        (torch.rand(2, 3, 28, 28), torch.tensor([1, 2]), r"shape \(B, 1, 28, 28\)"),
        (torch.rand(2, 1, 32, 32), torch.tensor([1, 2]), r"shape \(B, 1, 28, 28\)"),
        (torch.rand(2, 1, 28, 28), torch.tensor([1, 2, 3]), "batch mismatch: 2 images but 3 labels"),
        (torch.full((2, 1, 28, 28), float("nan")), torch.tensor([1, 2]), "NaN"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.tensor([1, 2]), "floats"),
        (torch.rand(2, 1, 28, 28), torch.tensor([1, 12]), "0..9"),
        (torch.rand(2, 1, 28, 28), None, "pass labels"),
    ],
)
def test_bad_inputs_get_clear_errors(lab_model, x, y, message):
    with pytest.raises((ValueError, TypeError), match=message):
        lab_model(x, y)


def test_decode_checks_z(lab_model):
    with pytest.raises(ValueError, match=r"z must have shape \(B, 20\)"):
        lab_model.decode(torch.zeros(2, 19), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="batch mismatch: 2 latent vectors but 1 labels"):
        lab_model.decode(torch.zeros(2, 20), torch.tensor([1]))


def test_named_configurations():
    assert get_config("lab") == CVAEConfig()
    assert set(CONFIGS) >= {"lab", "wide", "lab-vae"}
    with pytest.raises(ValueError, match="unknown model configuration 'huge'"):
        get_config("huge")
    for name in CONFIGS:
        m = CVAE(name)
        out, _, _ = m(torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2]))
        assert out.shape == (3, 1, 28, 28)


def test_plain_vae_ignores_labels():
    vae = CVAE("lab-vae")
    assert vae.encoder.conv[0].in_channels == 1
    assert vae.decoder.fc[0].in_features == 20
    assert vae.sample(n=4).shape == (4, 1, 28, 28)


def test_config_round_trips_through_a_dict():
    cfg = CONFIGS["wide"]
    assert CVAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="not image_size"):
        CVAEConfig(dec_start_size=10)


# ---------------------------------------------------------------- shared helpers

def test_decode_all_labels_decodes_each_z_with_every_label(lab_model):
    z = torch.randn(3, 20)
    with torch.no_grad():
        sheet = lab_model.decode_all_labels(z)  # (3, 10, 1, 28, 28)
        one_by_one = torch.stack([lab_model.decode(z, torch.full((3,), k)) for k in range(10)], 1)
    assert sheet.shape == (3, 10, 1, 28, 28)
    assert torch.allclose(sheet, one_by_one, atol=1e-6)


def test_decode_all_labels_takes_a_subset_of_labels_and_a_plain_vae(lab_model):
    z = torch.randn(2, 20)
    with torch.no_grad():
        some = lab_model.decode_all_labels(z, torch.tensor([7, 3]))
        assert torch.allclose(some[:, 0], lab_model.decode(z, torch.tensor([7, 7])), atol=1e-6)
        assert CVAE("lab-vae").decode_all_labels(z).shape == (2, 1, 1, 28, 28)  # no labels: L = 1
    with pytest.raises(ValueError, match="z must have shape"):
        lab_model.decode_all_labels(z[0])


def test_eval_mode_restores_every_submodule_even_when_the_body_raises(lab_model):
    lab_model.train()
    lab_model.decoder.eval()  # a part frozen in eval mode on purpose
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(lab_model) as m:
            assert m is lab_model
            assert not any(sub.training for sub in lab_model.modules())
            raise RuntimeError("boom")
    assert lab_model.training and lab_model.encoder.training
    assert not lab_model.decoder.training and not lab_model.decoder.conv[0].training
    with eval_mode(lab_model.eval()):
        pass
    assert not lab_model.training  # eval stays eval


def test_checkpoint_info_is_declared_and_empty_on_a_new_model(lab_model):
    assert lab_model.checkpoint_info == {}
    assert "checkpoint_info" in CVAE.__annotations__
