"""Training-time augmentation of whole batches on their device: random affine maps and elastic distortions.

Both draw their parameters from the ``generator`` the loader seeds per (seed, epoch, rank), so augmented runs
stay reproducible and resume exactly. They draw on the generator's device, which the loader makes the batch's:
on CPU the stream of a ``torch.Generator()`` as before, on a GPU a CUDA generator, so a batch's parameters never
cross from host memory (a copy from pageable memory would wait for the GPU every batch). They work on raw
images in [0, 1] (background 0), before any standardisation, so the zero padding of ``grid_sample`` is the
background.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class RandomAffine:
    """Per-image random rotation, scaling, shear and shift of a batch at once (``affine_grid`` + ``grid_sample``).

    The same digit a little rotated, larger or smaller, slanted or off centre (``--augment``).

    Args:
        degrees: rotations drawn from [-degrees, degrees].
        translate: shifts drawn from [-translate, translate] of the image size, in x and y.
        scale: zoom factors drawn from [1 - scale, 1 + scale].
        shear: horizontal shear factors drawn from [-shear, shear].
        elastic: an ``ElasticDistortion`` added to the same sampling grid (``--elastic``), or ``None``.
    """

    def __init__(self, degrees: float = 10.0, translate: float = 2 / 32, scale: float = 0.1, shear: float = 0.1,
                 elastic: ElasticDistortion | None = None) -> None:
        if not (degrees >= 0 and translate >= 0 and 0 <= scale < 1 and 0 <= shear < 1):
            raise ValueError("RandomAffine: degrees and translate must be >= 0, scale and shear in [0, 1)")
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, scale, shear
        self.elastic = elastic

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:  # (B, 1, H, W)
        n = images.shape[0]

        def uniform(bound: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator, device=generator.device) * 2 - 1) * bound

        angle = uniform(math.radians(self.degrees))
        zoom = 1 + uniform(self.scale)
        shear = uniform(self.shear)
        shift_x, shift_y = uniform(2 * self.translate), uniform(2 * self.translate)  # grid coordinates span 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # (rotation / zoom) @ [[1, shear], [0, 1]]: output -> input coordinates
        theta = torch.stack([torch.stack([cos, cos * shear - sin, shift_x], 1),
                             torch.stack([sin, sin * shear + cos, shift_y], 1)], 1)
        theta = theta.to(device=images.device, dtype=images.dtype)  # (B, 2, 3); a copy only across devices
        grid = affine_grid(theta, images.shape[-2], images.shape[-1])  # (B, H, W, 2)
        if self.elastic is not None:
            grid = grid + self.elastic.displacement(images.shape, generator).to(images.device, images.dtype)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, height, width), align_corners=False)`` as six broadcast multiply-adds.

    torch computes it as a batched matrix product ``(B, H*W, 3) @ (B, 3, 2)``, which is slow for K = 3 (a
    visible share of a CPU training step). This is the same sum, ``x*a + y*b + c``, on
    torch's own base coordinates: on our CPUs it gave bit-identical grids; it stays within 1e-6 anywhere.
    """
    n = theta.shape[0]
    base = F.affine_grid(torch.eye(2, 3, dtype=theta.dtype, device=theta.device)[None], [1, 1, height, width],
                         align_corners=False).view(1, height * width, 2)  # the grid's (x, y) coordinates
    x, y = base[..., 0], base[..., 1]  # (1, H*W) each

    def row(i: int) -> torch.Tensor:
        return x * theta[:, i, 0:1] + y * theta[:, i, 1:2] + theta[:, i, 2:3]  # (B, H*W)

    return torch.stack([row(0), row(1)], dim=-1).view(n, height, width, 2)


class ElasticDistortion:
    """Simard et al. (2003) elastic distortions: a random displacement field per image, smoothed by a Gaussian.

    Args:
        alpha: displacement scale in pixels (uniform noise in [-1, 1] per pixel, smoothed, times ``alpha``).
        sigma: standard deviation of the Gaussian smoothing, in pixels.
    """

    def __init__(self, alpha: float = 20.0, sigma: float = 4.0) -> None:
        if not (alpha >= 0 and sigma > 0):
            raise ValueError("ElasticDistortion: alpha must be >= 0 and sigma > 0")
        self.alpha, self.sigma = alpha, sigma
        self.kernel = self._gaussian(torch.device("cpu"))  # (2r + 1,)
        self._kernels = {self.kernel.device: self.kernel}

    def _gaussian(self, device: torch.device) -> torch.Tensor:
        """The normalised Gaussian ``(2r + 1,)``, computed on ``device`` (no copy from the host)."""
        radius = int(math.ceil(3 * self.sigma))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
        kernel = torch.exp(-(x**2) / (2 * self.sigma**2))
        return kernel / kernel.sum()

    def displacement(self, shape: torch.Size | tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Offsets ``(B, H, W, 2)`` in ``grid_sample``'s normalised coordinates (x, y), drawn on the generator's
        device."""
        n, _, h, w = shape
        device = generator.device
        noise = torch.rand(n * 2, 1, h, w, generator=generator, device=device) * 2 - 1
        if device not in self._kernels:
            self._kernels[device] = self._gaussian(device)
        k = self._kernels[device]
        pad = len(k) // 2
        # separable Gaussian blur, zero padding outside the image
        field = F.conv2d(F.pad(noise, (pad, pad, 0, 0)), k.view(1, 1, 1, -1))
        field = F.conv2d(F.pad(field, (0, 0, pad, pad)), k.view(1, 1, -1, 1))
        field = field.view(n, 2, h, w) * self.alpha
        # pixels -> normalised coordinates: filled on the device, the values torch.tensor([2 / w, 2 / h]) holds
        scale = torch.stack([torch.full((), 2.0 / w, device=device), torch.full((), 2.0 / h, device=device)])
        return (field * scale.view(1, 2, 1, 1)).permute(0, 2, 3, 1)
