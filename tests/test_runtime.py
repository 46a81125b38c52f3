"""runtime: one place for the seed and the device."""
import pytest
import torch

from lab_utils.runtime import get_device, quick_mode, setup


def test_device_from_environment(monkeypatch):
    monkeypatch.setenv("CVAE_LAB_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    monkeypatch.setenv("CVAE_LAB_DEVICE", "tpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_asking_for_a_missing_gpu_says_so(monkeypatch):
    monkeypatch.setenv("CVAE_LAB_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        get_device()


def test_default_device_is_the_best_available(monkeypatch):
    monkeypatch.delenv("CVAE_LAB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert get_device().type == expected


def test_setup_seeds_everything():
    setup(seed=5)
    a = torch.rand(3)
    setup(seed=5)
    assert torch.equal(a, torch.rand(3))


def test_quick_mode(monkeypatch):
    monkeypatch.setenv("CVAE_LAB_QUICK", "1")
    assert quick_mode()
    monkeypatch.setenv("CVAE_LAB_QUICK", "0")
    assert not quick_mode()
