"""hwsim's event-driven kernels against torch's conv / matmul, exactly, on integer inputs.

(Whole graphs through the event path: backend ``hwsim-events`` in tests/test_conformance.py.)
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwsim.events import conv_events, dense_events


@pytest.mark.parametrize("shape,kernel,stride,padding", [((3, 7, 5), (3, 3), (1, 1), (1, 1)),
                                                         ((4, 9, 8), (6, 6), (2, 2), (2, 2)),
                                                         ((2, 5, 6), (2, 3), (2, 1), (0, 1))])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5])
def test_conv_events_equal_conv2d(shape, kernel, stride, padding, density):
    rng = np.random.default_rng(0)
    x = (rng.random((3, *shape)) < density) * rng.choice([-1, 1, 2], size=(3, *shape))
    w = rng.integers(-127, 128, size=(5, shape[0], *kernel))
    want = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), stride=stride, padding=padding)
    got = conv_events(np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(np.float32),
                      np.ascontiguousarray(w.transpose(2, 3, 1, 0)).astype(np.float32), *stride, *padding,
                      *want.shape[2:])
    assert np.array_equal(got.transpose(0, 3, 1, 2), want.numpy())


@pytest.mark.parametrize("density", [0.0, 0.03, 1.0])
def test_dense_events_equal_matmul(density):
    rng = np.random.default_rng(1)
    x = ((rng.random((4, 50)) < density) * rng.choice([-1, 1], size=(4, 50))).astype(np.float64)
    w = rng.integers(-256, 256, size=(50, 7)).astype(np.float64)
    assert np.array_equal(dense_events(x, w), x @ w)
