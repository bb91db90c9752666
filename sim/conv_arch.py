"""The convolutional networks of the papers the experiments reproduce, built with :func:`sim.conv.init_convnet`.

* :func:`mnist1d_cnn`: Greydanus (2020)'s CNN for MNIST-1D: three ReLU
  convolutions of 25 channels, kernels 5, 3, 3, stride 2, zero padding 1, then
  a linear read-out of the flattened ``25 x 5`` features (for 40 points).
* :func:`lenet`: biotorch's LeNet for MNIST (Sanfiz & Akrout 2021,
  ``le_net_mnist``): convolutions of 6, 16 and 120 channels with 5 x 5 kernels,
  the first two each followed by 2 x 2 max pooling, then dense layers of 84 and
  ``n_classes`` units. :mod:`sim.conv` has no pooling, so each pooled
  convolution is a stride-2 convolution here, which gives the same feature map
  sizes (28 x 28 inputs, padded by 2 as biotorch's 32 x 32: 14, 5, then 1;
  32 x 32 CIFAR-10 images unpadded: the same). The hidden dense layer gets the
  activation too (biotorch's has none between its two dense layers).
"""

from __future__ import annotations

import numpy as np

from .conv import ConvNet, init_convnet


def mnist1d_cnn(n_points: int, n_classes: int, n_members: int = 1, *, seed: int = 0, bias: bool = True,
                init: str = "uniform", scale: float = 1.0, xp=None, dtype: str = "float64") -> ConvNet:
    """Greydanus (2020)'s MNIST-1D CNN on signals of ``n_points`` (input ``(B, 1, 1, n_points)``), ReLU."""
    return init_convnet([1, 25, 25, 25], [(1, 5), (1, 3), (1, 3)], [(1, 2)] * 3, [(0, 1)] * 3, [n_classes],
                        (1, n_points), n_members, seed=seed, activation="relu", bias=bias, init=init, scale=scale,
                        xp=xp, dtype=dtype)


def lenet(image_shape, n_classes: int, n_members: int = 1, *, seed: int = 0, activation: str = "relu",
          bias: bool = True, init: str = "uniform", scale: float = 1.0, xp=None, dtype: str = "float64") -> ConvNet:
    """biotorch's LeNet (see the module docstring) for images ``(H, W, C)`` of 28 x 28 or 32 x 32 pixels.

    Input ``(B, C, H, W)`` (:func:`to_images`); a 28 x 28 image is padded by 2
    in the first convolution, as biotorch pads MNIST to 32 x 32.
    """
    height, width, channels = (int(v) for v in image_shape)
    if (height, width) not in ((28, 28), (32, 32)):
        raise ValueError(f"lenet takes 28 x 28 or 32 x 32 images, got {height} x {width}")
    pad = 2 if height == 28 else 0
    return init_convnet([channels, 6, 16, 120], [5, 5, 5], [2, 2, 1], [pad, 0, 0], [84, n_classes], (height, width),
                        n_members, seed=seed, activation=activation, bias=bias, init=init, scale=scale, xp=xp,
                        dtype=dtype)


def to_images(x, image_shape):
    """Flattened images ``(N, H W C)`` in ``(H, W, C)`` order (:func:`sim.data.real.load`) as ``(N, C, H, W)``."""
    height, width, channels = (int(v) for v in image_shape)
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != height * width * channels:
        raise ValueError(f"images of shape {tuple(image_shape)} need x of shape (N, {height * width * channels}), "
                         f"got {x.shape}")
    return np.ascontiguousarray(x.reshape(-1, height, width, channels).transpose(0, 3, 1, 2))
