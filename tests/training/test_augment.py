"""Augmentation: random affine maps and elastic distortions, on real MNIST digits."""

import pytest
import torch

from ignite_lenet.training.augment import ElasticDistortion, RandomAffine, affine_grid
from ignite_lenet.training.data import InMemoryLoader, Split


def test_random_affine_is_identity_at_zero_and_reproducible(mnist_data):
    x = mnist_data.test.images[:16]
    identity = RandomAffine(degrees=0, translate=0, scale=0, shear=0)
    torch.testing.assert_close(identity(x, torch.Generator().manual_seed(0)), x, atol=1e-6, rtol=0)
    augment = RandomAffine()
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    c = augment(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape
    # a mild transform: the digit keeps most of its ink and stays in [0, 1]
    assert 0.0 <= a.min().item() and a.max().item() <= 1.0
    assert (a.sum((1, 2, 3)) / x.sum((1, 2, 3))).sub(1).abs().max().item() < 0.35
    with pytest.raises(ValueError):
        RandomAffine(scale=1.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(64, 32, 32), (1, 28, 28), (5, 20, 30)])
def test_affine_grid_is_torchs_affine_grid(shape, dtype):
    n, h, w = shape
    theta = torch.randn(n, 2, 3, generator=torch.Generator().manual_seed(n * h), dtype=dtype)
    grid = affine_grid(theta, h, w)
    expected = torch.nn.functional.affine_grid(theta, [n, 1, h, w], align_corners=False)
    assert grid.shape == (n, h, w, 2) and grid.dtype == dtype
    torch.testing.assert_close(grid, expected, atol=1e-6, rtol=0)


def test_augmented_loader_draws_new_transforms_each_epoch_but_the_same_order():
    split = Split(torch.rand(64, 1, 32, 32), torch.arange(64))
    plain = InMemoryLoader(split, 16, shuffle=True, seed=0)
    augmented = InMemoryLoader(split, 16, shuffle=True, seed=0, augment=RandomAffine())
    epochs = {}
    for epoch in (1, 2):
        plain.set_epoch(epoch)
        augmented.set_epoch(epoch)
        assert [y.tolist() for _, y in plain] == [y.tolist() for _, y in augmented]
        epochs[epoch] = torch.cat([x for x, _ in augmented])
        assert torch.equal(epochs[epoch], torch.cat([x for x, _ in augmented]))  # reproducible within an epoch
    assert not torch.equal(epochs[1], epochs[2])


def test_elastic_distortion_is_smooth_bounded_and_reproducible(mnist_data):
    x = mnist_data.test.images[:32]
    elastic = ElasticDistortion(alpha=20.0, sigma=4.0)
    field = elastic.displacement(x.shape, torch.Generator().manual_seed(0))
    assert field.shape == (32, 32, 32, 2)
    pixels = field * 16  # normalised coordinates -> pixels (32 px span 2)
    # smoothed noise: displacements of a few pixels, neighbours move together
    assert 0.3 < pixels.abs().mean().item() < 4 and pixels.abs().max().item() < 12
    step = (pixels[:, 1:] - pixels[:, :-1]).abs().mean().item()
    assert step < 0.25 * pixels.abs().mean().item()
    assert torch.equal(field, elastic.displacement(x.shape, torch.Generator().manual_seed(0)))
    no_affine = RandomAffine(degrees=0, translate=0, scale=0, shear=0, elastic=elastic)
    out = no_affine(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert (out.sum((1, 2, 3)) / x.sum((1, 2, 3))).sub(1).abs().median().item() < 0.25
    zero = RandomAffine(degrees=0, translate=0, scale=0, shear=0, elastic=ElasticDistortion(alpha=0.0))
    torch.testing.assert_close(zero(x, torch.Generator().manual_seed(3)), x, atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        ElasticDistortion(sigma=0)


def test_shear_slants_the_digit(mnist_data):
    x = mnist_data.test.images[:8]
    sheared = RandomAffine(degrees=0, translate=0, scale=0, shear=0.3)(x, torch.Generator().manual_seed(0))
    assert not torch.equal(sheared, x)
    # a pure shear keeps rows: the ink of each row is nearly preserved
    rows_before, rows_after = x.sum((1, 3)), sheared.sum((1, 3))
    assert (rows_before - rows_after).abs().sum().item() < 0.1 * rows_before.sum().item()
