"""labels: one_hot and expand_labels, checked against torch's own one_hot."""
import pytest
import torch
import torch.nn.functional as F

from lab_utils.labels import expand_labels, one_hot


def test_one_hot_matches_torch():
    y = torch.tensor([0, 3, 9, 3])
    assert torch.equal(one_hot(y), F.one_hot(y, 10).float())
    assert one_hot(y).dtype == torch.float32


def test_expand_labels_shape_and_values():
    y = torch.tensor([2, 7, 0])
    maps = expand_labels(y)
    assert maps.shape == (3, 10, 28, 28)
    for b, label in enumerate(y.tolist()):
        assert torch.all(maps[b, label] == 1)
        assert maps[b].sum().item() == 28 * 28  # every other channel is zero


def test_expand_labels_is_a_view_not_a_copy():
    y = torch.tensor([1, 4])
    maps = expand_labels(y, 5, 6)
    assert maps.shape == (2, 10, 5, 6)
    assert maps.stride()[-2:] == (0, 0)  # expanded axes take no memory
    assert maps.untyped_storage().nbytes() == 2 * 10 * 4  # only the (2, 10) one-hot floats


@pytest.mark.parametrize(
    "y, error, message",
    [
        (torch.tensor([0, 10]), ValueError, "0..9"),
        (torch.tensor([-1]), ValueError, "0..9"),
        (torch.tensor([1.0, 2.0]), TypeError, "integer dtype"),
        (torch.tensor([[1, 2]]), ValueError, r"shape \(B,\)"),
        ([1, 2], TypeError, "torch.Tensor"),
    ],
)
def test_bad_labels_are_refused(y, error, message):
    with pytest.raises(error, match=message):
        expand_labels(y)
