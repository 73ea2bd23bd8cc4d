"""hwsim's int8 products (``hwsim.int8_products``): exact where they are used, absent where
they could not be. (Whole graphs on the int8 path: backend ``hwsim-int8`` in
tests/test_conformance.py; mixed with the other paths: tests/test_hwsim_events.py.)"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwsim import int8_products
from hwsim.int8_products import Int8Product, int8_shift
from hwsim.plan import make_plans
from fixedpoint_cases import CASES

pytestmark = pytest.mark.skipif(not int8_products.available(), reason="torch has no exact oneDNN int8 ops here")


def test_weights_factor_into_int8_times_a_power_of_two():
    assert int8_shift(np.array([-128, 0, 127])) == 0
    assert int8_shift(np.array([-256, 2, 254])) == 1          # Lava's dense weights: even, 9 bits
    assert int8_shift(np.array([-512, 4, 508])) == 2
    assert int8_shift(np.array([128])) == 1
    assert int8_shift(np.array([255])) is None                # odd and beyond int8
    assert int8_shift(np.array([-256, 3])) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8, torch.uint8, torch.bool])
def test_conv_is_exact_for_every_spike_dtype(dtype):
    rng = np.random.default_rng(1)
    w = rng.integers(-64, 64, size=(6, 5, 3, 3)) * 4                # in [-256, 252]: 2 x int8
    low = 0 if dtype in (torch.uint8, torch.bool) else -1
    x = torch.from_numpy(rng.integers(low, 2, size=(3, 5, 7, 6))).to(dtype)
    prod = Int8Product.make("conv", w, stride=(2, 1), padding=(1, 0))
    assert prod is not None and prod.shift == 1
    ref = F.conv2d(x.double(), torch.from_numpy(w).double(), stride=(2, 1), padding=(1, 0))
    got = prod(x)
    assert got.dtype == torch.float32 and torch.equal(got.double(), ref)


def test_dense_is_exact_for_signed_spikes():
    rng = np.random.default_rng(2)
    w = rng.integers(-128, 128, size=(9, 40))
    x = torch.from_numpy(rng.integers(-1, 2, size=(5, 40))).to(torch.int8)
    got = Int8Product.make("dense", w)(x)
    assert torch.equal(got.double(), x.double() @ torch.from_numpy(w).double().T)


def test_no_product_where_it_would_not_be_exact(monkeypatch):
    assert Int8Product.make("dense", np.array([[255, 1]])) is None              # not int8 x 2**k
    graph, _ = CASES["wide_conv_beyond_float32"]()
    plans = make_plans(graph, torch.device("cpu"))
    assert plans[0].dtype == torch.float64 and plans[0].int8 is None           # sums beyond 2**24
    monkeypatch.setattr(int8_products, "available", lambda: False)             # a torch without the ops
    assert all(p.int8 is None for p in make_plans(*CASES["folded_pools"]()[:1], torch.device("cpu")))
