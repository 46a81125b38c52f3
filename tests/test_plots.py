"""Tests of lab_utils.plots: the noise-by-label grid keeps the lab report's orientation."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from lab_utils.model import CVAE  # noqa: E402
from lab_utils.plots import label_noise_grid, plot_disentanglement  # noqa: E402


def _model(name: str = "lab") -> CVAE:
    torch.manual_seed(0)
    return CVAE(name).eval()


def test_grid_has_one_noise_per_row_and_the_labels_along_it():
    model = _model()
    z = torch.randn(3, model.config.latent_dim, generator=torch.Generator().manual_seed(0))  # (3, 20)
    grid = label_noise_grid(model, z, labels=[4, 7])
    assert grid.shape == (3, 2, 1, 28, 28)
    with torch.inference_mode():
        row = model.decode(z[1].expand(2, -1), torch.tensor([4, 7]))  # (2, 1, 28, 28): noise 2
    assert torch.allclose(grid[1], row, atol=1e-6)


def test_grid_of_a_plain_vae_repeats_each_noise_along_its_row():
    model = _model("lab-vae")
    z = torch.randn(2, model.config.latent_dim)  # (2, 20)
    grid = label_noise_grid(model, z)
    assert grid.shape == (2, 10, 1, 28, 28)
    assert torch.equal(grid[0, 0], grid[0, 9])


def test_figure_names_noises_on_rows_and_labels_on_columns():
    fig = plot_disentanglement(_model(), n_noise=3, labels=range(10))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["noise 1", "noise 2", "noise 3"]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(d) for d in range(10)]
    assert ax.get_title() and ax.get_xlabel() == "requested label"
    height, width = ax.images[0].get_array().shape
    assert (height, width) == (3 * 30 + 2, 10 * 30 + 2)  # 28 px + 2 px padding per image
    plt.close(fig)
