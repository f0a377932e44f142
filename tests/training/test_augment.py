"""Augmentation: random affine maps and elastic distortions, on real MNIST digits; on CPU the stream of the
implementation before device draws, bit for bit; on CUDA no host sync per augmented step (skipped without one)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import OneCycleLR

from ignite_lenet.model import LeNet5, optimize_layout
from ignite_lenet.training.augment import ElasticDistortion, RandomAffine, affine_grid
from ignite_lenet.training.data import InMemoryLoader, Split
from ignite_lenet.training.optim import create_optimizer
from ignite_lenet.training.step import TrainStep


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


# -- the CPU stream: what the implementation drew before it drew on the generator's device (verbatim)


def _previous_displacement(elastic, shape, generator):
    n, _, h, w = shape
    noise = torch.rand(n * 2, 1, h, w, generator=generator) * 2 - 1
    k = elastic.kernel
    pad = len(k) // 2
    field = F.conv2d(F.pad(noise, (pad, pad, 0, 0)), k.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, pad, pad)), k.view(1, 1, -1, 1))
    field = field.view(n, 2, h, w) * elastic.alpha
    scale = torch.tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)
    return (field * scale).permute(0, 2, 3, 1)


def _previous_random_affine(augment, images, generator):
    n = images.shape[0]

    def uniform(bound):
        return (torch.rand(n, generator=generator) * 2 - 1) * bound

    angle = uniform(math.radians(augment.degrees))
    zoom = 1 + uniform(augment.scale)
    shear = uniform(augment.shear)
    shift_x, shift_y = uniform(2 * augment.translate), uniform(2 * augment.translate)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, cos * shear - sin, shift_x], 1),
                         torch.stack([sin, sin * shear + cos, shift_y], 1)], 1)
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = affine_grid(theta, images.shape[-2], images.shape[-1])
    if augment.elastic is not None:
        grid = grid + _previous_displacement(augment.elastic, images.shape, generator).to(images.device, images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@pytest.mark.parametrize("elastic", [False, True])
def test_cpu_draws_are_the_previous_stream_bit_for_bit(mnist_data, elastic):
    """The fast and best recipes augment on CPU: their runs must not change."""
    augment = RandomAffine(elastic=ElasticDistortion() if elastic else None)
    ours, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for start in (0, 64, 128):  # consecutive batches from one generator: the same draws in the same order
        x = mnist_data.train.images[start:start + 64]
        assert torch.equal(augment(x, ours), _previous_random_affine(augment, x, theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())


def test_the_loader_seeds_a_generator_on_the_images_device_per_seed_epoch_and_rank():
    split = Split(torch.rand(64, 1, 32, 32), torch.arange(64))
    seen = []

    def recording(images, generator):
        seen.append((generator.device, generator.initial_seed()))
        return images

    loader = InMemoryLoader(split, 16, shuffle=True, seed=3, rank=1, world_size=2, augment=recording)
    loader.set_epoch(2)
    list(loader)
    stream = (((3 * 1_000_003 + 2) * 1009 + 1) + 1) % 2**64  # the stream the CPU runs have always drawn
    assert seen == [(torch.device("cpu"), stream)] * len(loader)


# -- CUDA (skipped without a GPU)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_augmented_cuda_step_makes_no_host_sync(mnist_data):
    """Affine and elastic parameters are drawn on the GPU: a graphed, augmented one-cycle step never waits for it."""
    loader = InMemoryLoader(mnist_data.train.to("cuda"), 64, shuffle=True, seed=0, max_batches=12,
                            augment=RandomAffine(elastic=ElasticDistortion()))
    model = optimize_layout(LeNet5(), "cuda").to("cuda")
    optimizer = create_optimizer(model.parameters(), "adamw", 3e-3, 0.05, "cuda", graphs=True, varying_betas=True)
    scheduler = OneCycleLR(optimizer, 3e-3, total_steps=len(loader))
    step = TrainStep(model, optimizer, batch_size=64)
    batches = iter(loader)
    for _ in range(6):  # lazy CUDA initialisation, the epoch's order, the warm-ups and the capture may sync
        step(None, next(batches))
        scheduler.step()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            step(None, next(batches))
            scheduler.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step.graphed and step.captures == 1
    assert torch.isfinite(step.take_loss_window()[0]).item()
