"""checkpoints: atomic save, exact round trip, clear errors, the shipped model."""
import os

import pytest
import torch

from lab_utils import checkpoints
from lab_utils import ship as ship_cli
from lab_utils.checkpoints import (
    CheckpointError, load_checkpoint, load_pretrained, load_state, read_checkpoint,
    save_checkpoint,
)
from lab_utils.model import CVAE, count_parameters


def test_round_trip_gives_identical_outputs(tmp_path, small_batch):
    x, y = small_batch
    torch.manual_seed(0)
    model = CVAE("lab").eval()
    path = save_checkpoint(tmp_path / "m.pt", model, metrics={"test_nelbo": 123.4}, epochs=3)
    loaded, ckpt = load_checkpoint(path)
    z = torch.randn(64, 20)
    with torch.no_grad():
        assert torch.equal(model.decode(z, y), loaded.decode(z, y))
        assert torch.equal(model.encode(x, y)[0], loaded.encode(x, y)[0])
    assert ckpt["metrics"]["test_nelbo"] == 123.4 and ckpt["epochs"] == 3
    assert set(ckpt["versions"]) == {"lab_utils", "torch", "torchvision", "python"}
    assert loaded.checkpoint_info["epochs"] == 3  # the one loading path fills it in
    assert loaded.checkpoint_info["metrics"] == {"test_nelbo": 123.4}


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    model = CVAE("lab")
    save_checkpoint(path, model, epochs=1)
    before = path.read_bytes()

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, epochs=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pt"]  # no temporary file left behind


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pt"
    save_checkpoint(path, CVAE("lab"))
    path.write_bytes(path.read_bytes()[:5000])  # truncated
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(CVAE("lab").state_dict(), path)
    with pytest.raises(CheckpointError, match="not a CVAE Lab checkpoint"):
        load_checkpoint(path)


def test_another_architecture_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "wide.pt", CVAE("wide"))
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(path, config="lab")
    with pytest.raises(CheckpointError, match="another architecture.*enc_channels"):
        load_state(CVAE("lab"), read_checkpoint(path), path)
    model, _ = load_checkpoint(path)  # without a wish, the saved architecture is rebuilt
    assert model.config.enc_channels == CVAE("wide").config.enc_channels


def test_shipped_lab_model_loads_on_cpu_in_eval_mode():
    model = load_pretrained()
    assert count_parameters(model) == 343_057
    assert not model.training and model.device.type == "cpu"
    path = checkpoints.pretrained_path("lab")
    assert read_checkpoint(path)["optimizer"] is None  # shipped: weights only
    assert 0.6e6 < path.stat().st_size < 0.8e6  # 343,057 float16 weights and the history
    with pytest.raises(CheckpointError, match="no shipped model named 'nope'"):
        load_pretrained("nope")


def test_shipped_lab_model_generates_digits():
    model = load_pretrained()
    images = model.sample(torch.arange(10), generator=torch.Generator().manual_seed(0))
    assert images.shape == (10, 1, 28, 28)
    ink = images.mean().item()
    assert 0.05 < ink < 0.3  # digits: mostly black background, some white ink


def test_ship_drops_the_optimizer_and_halves_the_file(tmp_path, small_batch):
    torch.manual_seed(0)
    model = CVAE()
    optimizer = torch.optim.Adam(model.parameters())
    x, y = small_batch
    model(x, y)[0].sum().backward()
    optimizer.step()
    src = save_checkpoint(tmp_path / "train.pt", model, optimizer=optimizer, epochs=3,
                          metrics={"test_nelbo": 123.4})
    dst = tmp_path / "pretrained" / "shipped.pt"
    shipped = checkpoints.ship(src, dst)
    assert shipped["optimizer"] is None and shipped["epochs"] == 3
    assert shipped["metrics"] == {"test_nelbo": 123.4}
    assert all(v.dtype == torch.float16 for v in shipped["state_dict"].values())
    assert dst.stat().st_size < 0.3 * src.stat().st_size  # no Adam moments, half the bytes
    reloaded, _ = load_checkpoint(dst)
    assert next(reloaded.parameters()).dtype == torch.float32
    model.eval()
    with torch.no_grad():
        mu, _ = model.encode(x, y)
        mu16, _ = reloaded.encode(x, y)
    assert torch.allclose(mu, mu16, atol=2e-2)  # float16 rounding only


def test_ship_cli_refuses_a_missing_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        ship_cli.main([str(tmp_path / "nope.pt"), str(tmp_path / "out.pt")])
    assert exc.value.code == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()
