"""Why hwsim's float arithmetic is exact, on any device.

On a GPU, convolutions/matmuls may round their *inputs* to TF32 (10 explicit mantissa
bits) -- torch's default for cuDNN convolutions -- and bf16 inputs would be cheaper
still; accumulation is float32 in both. These tests prove on the CPU that every value
hwsim feeds them survives that rounding, that float32 holds every integer up to 2**24
(the bound hwsim checks per core), and why bf16 *outputs* are not used. The CUDA test
runs only where a GPU is present.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from export import fixedpoint as fx
from hwsim.device import tf32_round
from hwsim.plan import FLOAT32_EXACT
from hwsim.simulate import SimOptions, simulate


def bf16_round(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (7 explicit mantissa bits, RNE), back as float32."""
    return torch.from_numpy(np.asarray(x, dtype=np.float32)).to(torch.bfloat16).float().numpy()

INT8 = np.arange(-128, 128, dtype=np.float32)
DENSE_GRID = np.arange(-256, 256, 2, dtype=np.float32)          # 8-bit mixed-sign Dense weights
SPIKES_AND_POOLED = np.arange(-36, 37, dtype=np.float32)          # spikes and k x k sum-pooled spikes (k <= 6)


@pytest.mark.parametrize("rounding", [tf32_round, bf16_round], ids=["tf32", "bf16"])
def test_weights_and_spikes_are_exact_in_tf32_and_bf16(rounding):
    for values in (INT8, DENSE_GRID, SPIKES_AND_POOLED):
        np.testing.assert_array_equal(rounding(values), values)
    for bits in range(2, 9):                                          # any weight_bits the graph allows
        lo, hi = fx.conv_weight_range(bits)
        v = np.arange(lo, hi + 1, dtype=np.float32)
        np.testing.assert_array_equal(rounding(v), v)


def test_tf32_emulation_rounds_like_tf32():
    # 11 significant bits: 2049 is not representable (ties to even -> 2048), 2050 is
    assert tf32_round(np.array([2049.0, 2050.0, 2051.0], dtype=np.float32)).tolist() == [2048.0, 2050.0, 2052.0]
    assert bf16_round(np.array([257.0, 258.0], dtype=np.float32)).tolist() == [256.0, 258.0]


def test_float32_accumulator_holds_the_24_bit_bounds():
    # every integer up to 2**24 is exact in float32 (the per-core guard: sum |w| < 2**24) ...
    for x in (fx.V_MAX, -fx.V_MAX, 2 ** 23, -(2 ** 23), 2 ** 23 - 1, FLOAT32_EXACT - 1, FLOAT32_EXACT,
              (fx.VTH_MAX << fx.VTH_SHIFT)):
        assert int(np.float32(x)) == x
    assert int(np.float32(FLOAT32_EXACT + 1)) != FLOAT32_EXACT + 1         # ... and not one beyond
    # the 24-bit bounds are NOT exact in TF32 / bf16: sums must be *stored* in float32
    assert tf32_round(np.array([fx.V_MAX], dtype=np.float32))[0] != fx.V_MAX
    assert bf16_round(np.array([fx.V_MAX], dtype=np.float32))[0] != fx.V_MAX


def test_bf16_output_storage_would_round_sums():
    """A bf16 conv returns bf16: a sum like 257 cannot be stored, so hwsim keeps float32 outputs."""
    x = torch.ones(1, 1, 1, 2)
    w = torch.tensor([[[[128.0, 129.0]]]])
    exact = torch.nn.functional.conv2d(x, w)
    assert exact.item() == 257.0
    assert exact.to(torch.bfloat16).float().item() != 257.0
    # TF32-rounded inputs with a float32 accumulator keep the exact integer
    xr = torch.from_numpy(tf32_round(x.numpy()))
    wr = torch.from_numpy(tf32_round(w.numpy()))
    assert torch.nn.functional.conv2d(xr.double(), wr.double()).item() == 257.0


def _random_graph(rng):
    from export.graph import Core, CoreGraph
    from records.encoding import InputEncoding

    shape = (3, 8, 6)
    w1 = rng.integers(-100, 101, size=(8, 3, 3, 2))
    c1 = Core("c1", "conv", w1, shape, (8, 8, 5), vth=40, dv=200, padding=(1, 0))
    w2 = np.repeat(np.repeat(rng.integers(-100, 101, size=(6, 8, 3, 3)), 2, 2), 2, 3)
    c2 = Core("c2", "conv", w2, (8, 8, 5), (6, 4, 1), vth=300, stride=(2, 2), padding=(2, 1))
    w3 = rng.integers(-120, 121, size=(10, 24)) * 2
    h = Core("h", "dense", w3, (6, 4, 1), (10,), vth=60, weight_exp=-1)
    out = Core("out", "dense", rng.integers(-120, 121, size=(4, 10)) * 2, (10,), (4,), vth=0, spiking=False)
    return CoreGraph(InputEncoding.of(shape, [0.5] * 3, [0.3] * 3), [c1, c2, h, out], timesteps=9,
                     class_names=list("abcd"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu_and_reference_bit_for_bit():
    rng = np.random.default_rng(0)
    g = _random_graph(rng)
    images = rng.integers(0, 256, size=(37, 3, 8, 6), dtype=np.uint8)
    spikes = g.input.encode(images, 9, seed=1)
    ref = fx.run_reference(g, spikes)
    for tf32 in (True, False):
        gpu = simulate(g, spikes, device="cuda", record_spikes=True,
                       options=SimOptions(tf32=tf32, chunk=16, steps_per_block=4))
        for a, b in zip(ref.spikes, gpu.spike_trains):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(gpu.output, ref.output)
    cpu = simulate(g, (images, 1), timesteps=9)
    gpu = simulate(g, (images, 1), timesteps=9, device="cuda")
    np.testing.assert_array_equal(cpu.output, gpu.output)
    assert [l.spikes for l in cpu.layers] == [l.spikes for l in gpu.layers]
    assert [l.synaptic_events for l in cpu.layers] == [l.synaptic_events for l in gpu.layers]
    assert [l.active_neuron_updates for l in cpu.layers] == [l.active_neuron_updates for l in gpu.layers]


def test_the_cuda_test_graph_is_exact_on_cpu():
    """The graph the CUDA test uses (conv with leak, folded pool, dense with weight_exp) on the CPU."""
    rng = np.random.default_rng(0)
    g = _random_graph(rng)
    images = rng.integers(0, 256, size=(5, 3, 8, 6), dtype=np.uint8)
    spikes = g.input.encode(images, 9, seed=1)
    ref = fx.run_reference(g, spikes)
    res = simulate(g, spikes, record_spikes=True)
    for a, b in zip(ref.spikes, res.spike_trains):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(res.output, ref.output)
    assert sum(l.spikes for l in res.layers) > 0
