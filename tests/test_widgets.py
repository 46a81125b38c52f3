"""The slider explorer, driven without a browser: set values, read the PNG bytes."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lab_utils import CVAE, load_pretrained
from lab_utils.widgets import BIG_SCALE, ROW_GAP, ROW_SCALE, Z_RANGE, LatentExplorer, explore, png_bytes


@pytest.fixture(scope="module")
def model():
    return load_pretrained()


@pytest.fixture
def explorer(model):
    return LatentExplorer(model, digit=3, seed=0)


def pixels(png: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H, W), read by Pillow (an independent PNG reader)."""
    image = Image.open(io.BytesIO(png))
    assert image.mode == "L"
    return np.asarray(image)


def expected_digit(model, z: torch.Tensor, digit: int) -> np.ndarray:
    """The big picture computed directly with the model: decode, 0-255, upscale."""
    x_hat = model.sample(y=torch.tensor([digit]), z=z.view(1, -1))  # (1, 1, 28, 28)
    small = (x_hat[0, 0] * 255).round().to(torch.uint8).numpy()  # (28, 28)
    return small.repeat(BIG_SCALE, 0).repeat(BIG_SCALE, 1)  # (224, 224)


def test_starts_from_seeded_noise_and_shows_it(model, explorer):
    z = torch.randn(20, generator=torch.Generator().manual_seed(0)).clamp(-Z_RANGE, Z_RANGE)
    assert torch.equal(explorer.z, z)
    assert explorer.digit == 3 and explorer.render_count == 1
    big = pixels(explorer.image_png)
    assert big.shape == (224, 224)
    assert np.abs(big.astype(int) - expected_digit(model, z, 3)).max() <= 1


def test_setting_digit_changes_image_and_keeps_z(model, explorer):
    z, before = explorer.z, explorer.image_png
    explorer.digit = 7
    assert explorer.digit == 7
    assert torch.equal(explorer.z, z)
    assert explorer.image_png != before
    big = pixels(explorer.image_png)
    assert np.abs(big.astype(int) - expected_digit(model, z, 7)).max() <= 1
    # the old digit is far from the new picture: the change is visible, not noise
    assert np.abs(big.astype(int) - expected_digit(model, z, 3)).mean() > 10


def test_one_noise_slider_changes_that_dimension_only(explorer):
    z, before, renders = explorer.z, explorer.image_png, explorer.render_count
    explorer.noise_sliders[4].value = 2.5
    after = explorer.z
    changed = (after != z).nonzero().flatten().tolist()
    assert changed == [4]
    assert after[4].item() == 2.5
    assert explorer.image_png != before
    assert explorer.render_count == renders + 1


def test_same_state_gives_same_bytes(model, explorer):
    image, row = explorer.image_png, explorer.row_png
    twin = LatentExplorer(model, digit=3, seed=0)
    assert twin.image_png == image and twin.row_png == row
    explorer.digit = 5
    explorer.digit = 3
    assert explorer.image_png == image and explorer.row_png == row
    explorer.refresh()  # a fresh decode, no cache
    assert explorer.image_png == image


def test_out_of_range_values_are_clamped_not_crashing(explorer):
    explorer.digit = 12
    assert explorer.digit == 9
    explorer.digit_slider.value = -4
    assert explorer.digit == 0
    explorer.noise_sliders[0].value = 10.0
    assert explorer.z[0].item() == Z_RANGE
    explorer.temperature = 7.5
    assert explorer.temperature == 2.0
    explorer.temperature = -1
    assert explorer.temperature == 0.0
    explorer.set_z(torch.full((20,), -9.0))
    assert torch.equal(explorer.z, torch.full((20,), -Z_RANGE))
    assert pixels(explorer.image_png).shape == (224, 224)


def test_bad_z_gets_a_clear_error(explorer):
    with pytest.raises(ValueError, match="20 numbers"):
        explorer.set_z(torch.zeros(19))
    with pytest.raises(ValueError, match="NaN"):
        explorer.set_z(torch.full((20,), float("nan")))
    explorer.set_z(torch.ones(1, 20) * 0.5)  # (1, D), as an encoder returns it
    assert torch.equal(explorer.z, torch.full((20,), 0.5))


def test_new_noise_changes_z_and_renders_once(model, explorer):
    z, renders = explorer.z, explorer.render_count
    new = explorer.new_noise()
    assert torch.equal(new, explorer.z)
    assert (new != z).sum().item() == 20
    assert explorer.render_count == renders + 1
    # the button does the same, and the sequence of draws repeats with the seed
    explorer.noise_button.click()
    assert explorer.render_count == renders + 2
    twin = LatentExplorer(model, digit=3, seed=0)
    twin.new_noise()
    assert torch.equal(twin.z, new)


def test_hold_batches_changes_into_one_render(explorer):
    renders = explorer.render_count
    with explorer.hold():
        explorer.digit = 1
        explorer.temperature = 0.5
        explorer.noise_sliders[0].value = 1.0
    assert explorer.render_count == renders + 1
    assert explorer.digit == 1 and explorer.temperature == 0.5


def test_sliders_are_numbered_from_zero_like_the_notebooks(explorer):
    names = [s.description for s in explorer.noise_sliders]
    assert names == [f"z{i}" for i in range(20)]  # z0 ... z19, as z[0] ... z[19] in 02 and 03
    assert "z0 to z19" in explorer.widget.children[0].children[1].children[2].value


def test_sliders_show_the_z_decoded_at_every_temperature(model, explorer):
    noise = explorer.noise
    assert torch.equal(explorer.z, noise)  # temperature 1: z is the noise
    explorer.temperature = 0.5
    assert torch.allclose(explorer.z, 0.5 * noise)  # the sliders show 0.5 * noise ...
    big = pixels(explorer.image_png)  # ... and the picture decodes exactly that
    assert np.abs(big.astype(int) - expected_digit(model, explorer.z, 3)).max() <= 1
    assert torch.equal(explorer.noise, noise)  # the noise itself is kept
    explorer.temperature = 2.0  # z = 2 * noise, clamped to the sliders' +-3
    assert torch.allclose(explorer.z, (2 * noise).clamp(-Z_RANGE, Z_RANGE))
    big = pixels(explorer.image_png)
    assert np.abs(big.astype(int) - expected_digit(model, explorer.z, 3)).max() <= 1
    explorer.temperature = 1.0
    assert torch.allclose(explorer.z, noise)


def test_temperature_zero_shows_zero_and_freezes_the_noise(model, explorer):
    noise = explorer.noise
    explorer.temperature = 0.0
    assert torch.equal(explorer.z, torch.zeros(20))  # every slider reads 0 ...
    assert all(s.value == 0 and str(s.value) == "0.0" for s in explorer.noise_sliders)  # (not -0.0)
    big = pixels(explorer.image_png)  # ... and the picture is decoder(0, 3), the average 3
    assert np.abs(big.astype(int) - expected_digit(model, torch.zeros(20), 3)).max() <= 1
    # new noise would change nothing visible: disabled, with a note saying why
    assert explorer.noise_button.disabled
    assert all(s.disabled for s in explorer.noise_sliders)
    assert "temperature 0" in explorer.temperature_note.value
    image = explorer.image_png
    assert torch.equal(explorer.new_noise(), torch.zeros(20))  # from Python: still z = 0
    assert torch.equal(explorer.z, torch.zeros(20)) and explorer.image_png == image
    explorer.noise_sliders[4].value = 2.0  # a slider can't hold z != 0 at temperature 0
    assert explorer.noise_sliders[4].value == 0 and explorer.image_png == image
    # raising the temperature shows the noise again (the one drawn meanwhile) and unfreezes
    explorer.temperature = 1.0
    assert not torch.equal(explorer.noise, noise)
    assert torch.equal(explorer.z, explorer.noise)
    assert not explorer.noise_button.disabled and not explorer.noise_sliders[0].disabled
    assert explorer.temperature_note.value == ""
    big = pixels(explorer.image_png)
    assert np.abs(big.astype(int) - expected_digit(model, explorer.z, 3)).max() <= 1


def test_moving_a_slider_sets_z_and_the_noise_follows(model, explorer):
    explorer.temperature = 0.5
    explorer.noise_sliders[4].value = 1.0
    assert explorer.z[4].item() == 1.0  # the slider's value is the z decoded
    assert explorer.noise[4].item() == pytest.approx(2.0)  # noise = z / temperature
    big = pixels(explorer.image_png)
    assert np.abs(big.astype(int) - expected_digit(model, explorer.z, 3)).max() <= 1
    explorer.temperature = 1.0
    assert explorer.z[4].item() == pytest.approx(2.0)


def test_set_z_decodes_exactly_z_at_temperature_one(model, explorer):
    explorer.temperature = 0.0
    z = torch.linspace(-2, 2, 20)
    explorer.set_z(z)
    assert explorer.temperature == 1.0 and torch.equal(explorer.z, z)
    assert not explorer.noise_button.disabled
    big = pixels(explorer.image_png)
    assert np.abs(big.astype(int) - expected_digit(model, z, 3)).max() <= 1


def test_row_shows_all_ten_labels_with_the_same_z(model, explorer):
    row = pixels(explorer.row_png)
    tile = 28 * ROW_SCALE
    assert row.shape == (tile + 2 * ROW_GAP, 10 * (tile + ROW_GAP) + ROW_GAP)
    z = explorer.z
    for k in (0, 3, 8):
        left = ROW_GAP + k * (tile + ROW_GAP)
        got = row[ROW_GAP:ROW_GAP + tile, left:left + tile][::ROW_SCALE, ::ROW_SCALE]  # (28, 28)
        want = expected_digit(model, z, k)[::BIG_SCALE, ::BIG_SCALE]  # (28, 28)
        assert np.abs(got.astype(int) - want).max() <= 1
    # the chosen label (3) is framed in white, the others are not
    frame_x = ROW_GAP + 3 * (tile + ROW_GAP) - 1
    assert row[ROW_GAP + tile // 2, frame_x] == 255
    assert row[ROW_GAP + tile // 2, ROW_GAP - 1] != 255


def test_one_batched_decode_per_noise_change_none_per_digit(model, explorer, monkeypatch):
    calls = []
    decode = model.decode

    def counting_decode(z, y=None):
        calls.append((tuple(z.shape), torch.is_inference_mode_enabled()))
        return decode(z, y)

    monkeypatch.setattr(model, "decode", counting_decode)
    threads = torch.get_num_threads()
    explorer.noise_sliders[1].value = -1.0
    assert calls == [((10, 20), True)]  # ten labels, one call, no autograd
    explorer.digit = 6  # the row already holds label 6
    assert len(calls) == 1
    assert torch.get_num_threads() == threads  # the single-thread decode restored it


def test_png_bytes_round_trip():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(13, 37), dtype=np.uint8)
    assert np.array_equal(pixels(png_bytes(image)), image)


def test_display_is_the_widget(explorer):
    bundle = explorer._repr_mimebundle_()
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == explorer.widget.model_id


def test_other_models_and_class_names():
    torch.manual_seed(0)
    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    wide = explore(CVAE("wide").eval(), digit=9, class_names=fashion)
    assert wide.digit_slider.description == "class"
    assert "Ankle boot" in wide.row_caption.value and "Ankle boot" in wide.title.value
    assert pixels(wide.image_png).shape == (224, 224)
    with pytest.raises(ValueError, match="one name per class"):
        LatentExplorer(CVAE("lab"), class_names=["a", "b"])
    plain = LatentExplorer(CVAE("lab-vae").eval())  # no labels: one picture, no row
    assert plain.digit_slider.disabled and plain.row_png == b""
    before = plain.image_png
    plain.new_noise()
    assert plain.image_png != before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_decodes_on_the_models_gpu(model):
    gpu = LatentExplorer(load_pretrained(device="cuda"), digit=3, seed=0)
    cpu = LatentExplorer(model, digit=3, seed=0)
    assert np.abs(pixels(gpu.image_png).astype(int) - pixels(cpu.image_png)).max() <= 2
