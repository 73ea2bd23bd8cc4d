"""Every LIF backend (trainer.lif) against the reference on the same cases.

Spikes and the carried state must be equal bit for bit; gradients may differ by the order
of floating-point sums (the multistep backend's add is fused), within the stated tolerance.
Without a GPU the fused backend's Triton kernels run in Triton's interpreter (conftest sets
TRITON_INTERPRET=1 when there is no CUDA device); on a GPU machine every case runs on CUDA.
"""
import math

import pytest
import torch

from trainer.lif import NeuronState, Surrogate, lif_multistep, lif_reference
from trainer.lif_backends import fused_available, neuron_backend
from trainer.lif_numba import lif_numba
from trainer.models import ANN, build_config, neuron_layers
from trainer.snn import SNN, count_spikes

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FAST = ["multistep", "fused", "numba"]
GRAD_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}      # gradients here are of order 1
SURROGATES = [Surrogate("stdb", 0.3, 0.01), Surrogate("linear", 0.3), Surrogate("exp", 0.3, 0.5),
              Surrogate("stdb", 0.3, 0.01, through_reset=False), Surrogate("linear", 0.3, through_reset=False)]


def lif_of(backend):
    if backend == "fused" and not fused_available():
        pytest.skip("triton is not installed")
    if backend == "numba" and DEVICE.type != "cpu":
        pytest.skip("the numba backend runs on the CPU")
    return neuron_backend(backend, DEVICE)


def run_windows(lif, current, surrogate, theta, leak, windows):
    """The recurrence over ``current`` in windows of the given lengths; spikes, gradient, final state."""
    current = current.to(DEVICE).clone().requires_grad_()
    state, lut, t0, out = NeuronState.zeros(current[0].detach()), surrogate.lut(current.shape[0] + 1, DEVICE), 0, []
    for length in windows:
        spikes, state = lif(current[t0:t0 + length], state, theta, leak, t0, surrogate, lut)
        state, t0 = state.detached(), t0 + length
        out.append(spikes)
    spikes = torch.cat(out)
    # bf16-representable, so that a bf16 spike tensor receives the same upstream gradient
    weights = torch.randn(spikes.shape, generator=torch.Generator().manual_seed(1)).bfloat16().float()
    (spikes * weights.to(DEVICE)).sum().backward()
    return spikes.detach().cpu(), current.grad.cpu(), NeuronState(state.u.cpu(), state.o.cpu(), state.last.cpu())


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: s.kind + ("" if s.through_reset else "-detached"))
@pytest.mark.parametrize("leak", [1.0, 0.9])
@pytest.mark.parametrize("shape,windows", [((9, 3, 5), [9]), ((9, 2, 4, 3, 3), [4, 5]), ((7, 1), [1, 1, 5])])
def test_backend_matches_reference(backend, surrogate, leak, shape, windows):
    current = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.3
    ref = run_windows(lif_reference, current, surrogate, 0.7, leak, windows)
    got = run_windows(lif_of(backend), current, surrogate, 0.7, leak, windows)
    assert 0 < ref[0].sum() < ref[0].numel()          # the case fires some neurons, not all
    assert torch.equal(got[0], ref[0])
    assert torch.equal(got[2].u, ref[2].u.detach()) and torch.equal(got[2].last, ref[2].last)
    assert torch.equal(got[2].o, ref[2].o.detach())
    assert torch.allclose(got[1], ref[1], **GRAD_TOLERANCE)
    assert got[1].abs().sum() > 0


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("leak", [1.0, 0.9])
def test_evaluation_path_matches_reference(backend, leak):
    """Without gradients the fast backends keep nothing for a backward; the spikes stay the same."""
    current = torch.rand((9, 2, 4, 3, 3), generator=torch.Generator().manual_seed(0)) * 1.6 - 0.3
    surrogate = Surrogate()
    ref = run_windows(lif_reference, current, surrogate, 0.7, leak, [4, 5])
    lif, state, out = lif_of(backend), NeuronState.zeros(current[0].to(DEVICE)), []
    with torch.no_grad():
        for t0, length in [(0, 4), (4, 5)]:
            spikes, state = lif(current[t0:t0 + length].to(DEVICE), state, 0.7, leak, t0, surrogate,
                                surrogate.lut(10, DEVICE))
            out.append(spikes.cpu())
    assert torch.equal(torch.cat(out), ref[0])
    assert torch.equal(state.u.cpu(), ref[2].u.detach()) and torch.equal(state.last.cpu(), ref[2].last)


def test_fused_spikes_in_the_autocast_dtype():
    """Under bf16 autocast the fused backend hands the next synapse bf16 spikes; values and gradients unchanged."""
    lif = lif_of("fused")
    current = torch.rand((9, 2, 4, 3, 3), generator=torch.Generator().manual_seed(0)) * 1.6 - 0.3
    ref = run_windows(lif_reference, current, Surrogate(), 0.7, 0.9, [4, 5])
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        got = run_windows(lif, current, Surrogate(), 0.7, 0.9, [4, 5])
    assert got[0].dtype == torch.bfloat16 and torch.equal(got[0].float(), ref[0])
    assert torch.allclose(got[1], ref[1], **GRAD_TOLERANCE)


@pytest.mark.parametrize("surrogate", SURROGATES[:3], ids=lambda s: s.kind)
def test_numba_takes_bf16_currents_as_the_fp32_neuron_would(surrogate):
    """bf16 currents in, bf16 spikes and dL/dI out: the fp32 neuron's numbers, its gradient rounded as torch casts."""
    lif = lif_of("numba")
    current = (torch.rand((9, 2, 4, 3, 3), generator=torch.Generator().manual_seed(0)) * 1.6 - 0.3).bfloat16()
    ref = run_windows(lif, current.float(), surrogate, 0.7, 0.9, [4, 5])
    got = run_windows(lif, current, surrogate, 0.7, 0.9, [4, 5])
    assert got[0].dtype == torch.bfloat16 and torch.equal(got[0].float(), ref[0])
    assert got[1].dtype == torch.bfloat16 and torch.equal(got[1], ref[1].bfloat16())
    assert got[2].u.dtype == torch.float32 and torch.equal(got[2].u, ref[2].u)
    assert 0 < ref[0].sum() < ref[0].numel()


@pytest.mark.parametrize("backend", ["numba", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_backends_keep_channels_last(dtype, backend):
    """A channels-last layer is walked in its memory order: the same numbers, and spikes and dL/dI
    in the currents' layout (no copy into another layout and back)."""
    lif = lif_of(backend)
    dense = (torch.rand((5, 2, 6, 3, 4), generator=torch.Generator().manual_seed(0)) * 1.6 - 0.3).to(dtype)
    nhwc = dense.flatten(0, 1).to(memory_format=torch.channels_last).unflatten(0, (5, 2))
    assert not nhwc.is_contiguous()
    ref = run_windows(lif, dense, Surrogate("linear", 0.3), 0.7, 1.0, [2, 3])
    current = nhwc.clone().requires_grad_()
    state, lut, out = NeuronState.zeros(current[0].detach().float()), Surrogate().lut(6), []
    for t0, length in [(0, 2), (2, 3)]:
        spikes, state = lif(current[t0:t0 + length], state, 0.7, 1.0, t0, Surrogate("linear", 0.3), lut)
        assert spikes.stride() == current[t0:t0 + length].stride()
        state = state.detached()
        out.append(spikes)
    spikes = torch.cat(out)
    weights = torch.randn(spikes.shape, generator=torch.Generator().manual_seed(1)).bfloat16().float()
    (spikes * weights).sum().backward()
    assert torch.equal(spikes.detach(), ref[0]) and torch.equal(current.grad, ref[1])
    assert current.grad.stride() == current.stride()
    assert torch.equal(state.u, ref[2].u) and torch.equal(state.last, ref[2].last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("surrogate", SURROGATES[:3], ids=lambda s: s.kind)
def test_numba_counts_and_masks_as_it_fires(dtype, surrogate):
    """The numba kernels with a dropout mask (lif_numba.counted, as trainer.snn calls them):
    the spikes times the mask, the count of the spikes before it, and the gradient that
    torch's product in the same dtype gives, bit for bit; channels-last, over two windows."""
    lif_of("numba")
    gen = torch.Generator().manual_seed(0)
    dense = (torch.rand((9, 2, 6, 3, 4), generator=gen) * 1.6 - 0.3).to(dtype)
    nhwc = dense.flatten(0, 1).to(memory_format=torch.channels_last).unflatten(0, (9, 2))
    keep = 0.9                                   # 1 / 0.9 is not a bf16 number: the products round
    mask = ((torch.rand((2, 6, 3, 4), generator=gen) < keep).float() / keep).to(memory_format=torch.channels_last)
    weights = torch.randn(nhwc.shape, generator=gen).bfloat16().float()
    results = []
    for fused in (False, True):
        current = nhwc.clone().requires_grad_()
        state, lut, out, total = NeuronState.zeros(current[0].detach().float()), surrogate.lut(10), [], 0
        for t0, length in [(0, 4), (4, 5)]:
            window = current[t0:t0 + length]
            if fused:
                spikes, state, count = lif_numba.counted(window, state, 0.7, 0.9, t0, surrogate, lut, mask)
            else:
                spikes, state = lif_numba(window, state, 0.7, 0.9, t0, surrogate, lut)
                count = count_spikes(spikes)
                spikes = spikes * mask.to(spikes.dtype)
            total, state = total + count, state.detached()
            out.append(spikes)
        spikes = torch.cat(out)
        (spikes * weights).sum().backward()
        results.append((spikes.detach(), total, current.grad))
    (s0, c0, g0), (s1, c1, g1) = results
    assert s1.dtype == dtype and torch.equal(s0, s1) and torch.equal(g0, g1) and c0 == c1
    assert 0 < int(torch.count_nonzero(s1)) < c1        # the mask dropped some of the spikes counted


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_soft_reset_and_leak_two_neurons(backend):
    # theta = 1, leak 0.5, Eq. 2: u_t = 0.5 u_{t-1} + I_t - o_{t-1}
    lif = lif_reference if backend == "reference" else lif_of(backend)
    current = torch.tensor([[0.6, 2.5], [0.6, 0.0], [1.5, 0.0], [0.0, 0.0]], device=DEVICE)
    spikes, state = lif(current, NeuronState.zeros(current[0]), 1.0, 0.5, 0, Surrogate(), Surrogate().lut(5, DEVICE))
    # neuron A: 0.6, 0.9, 1.95 (spike), 0.975 - 1 = -0.025
    # neuron B: 2.5 (spike), 1.25 - 1 = 0.25, 0.125, 0.0625
    assert spikes.detach()[:, 0].tolist() == [0, 0, 1, 0]
    assert spikes.detach()[:, 1].tolist() == [1, 0, 0, 0]
    assert state.u.detach().tolist() == pytest.approx([-0.025, 0.0625])
    assert state.last.tolist() == [2, 0]


@pytest.mark.parametrize("through_reset", [True, False])
def test_stdb_gradient_by_hand(through_reset):
    # One neuron, theta 1, leak 0.5, STDB table g(dt) = 0.3 * 0.5^dt; spikes at t = 0 and 2.
    # dL/do = w_t; dL/du_t = g_t + c_t dL/du_{t+1}, c_t = 0.5 - g_t through the reset, 0.5 detached.
    surrogate = Surrogate("stdb", 0.3, 0.6931471805599453, through_reset=through_reset)
    current = torch.tensor([[1.5], [0.2], [1.6], [0.1]])
    expected = {}
    for backend in ["reference", *FAST]:
        lif = lif_reference if backend == "reference" else lif_of(backend)
        spikes, grad, _ = run_windows(lif, current, surrogate, 1.0, 0.5, [4])
        assert spikes.flatten().tolist() == [1, 0, 1, 0]
        expected[backend] = grad
    g = [0.3, 0.15, 0.3, 0.15]                          # ages 0, 1, 0, 1
    w = torch.randn((4, 1), generator=torch.Generator().manual_seed(1)).bfloat16().float().flatten().tolist()
    by_hand = [0.0] * 4
    for t in range(3, -1, -1):
        carry = 0.5 - g[t] if through_reset else 0.5
        by_hand[t] = w[t] * g[t] + (carry * by_hand[t + 1] if t < 3 else 0.0)
    for grad in expected.values():
        assert grad.flatten().tolist() == pytest.approx(by_hand, rel=1e-6)


@pytest.mark.parametrize("backend", FAST)
def test_training_step_matches_reference(backend):
    lif_of(backend)
    torch.manual_seed(0)
    ann = ANN(build_config("vgg_tiny", (1, 8, 8), 10)).to(DEVICE)
    x = torch.rand(6, 1, 8, 8).to(DEVICE)
    results = []
    for name in ("reference", backend):
        snn = SNN(ann, [1.0, 1.0, 1.0], leak=0.9, backend=name).train()
        ann.zero_grad()
        out = snn(x, 12, window=5, generator=torch.Generator(device=DEVICE).manual_seed(3))
        torch.nn.functional.cross_entropy(out, torch.arange(6, device=DEVICE) % 10).backward()
        results.append((out.detach(), list(snn.spike_counts), [p.grad.clone() for p in ann.parameters()]))
    (o1, c1, g1), (o2, c2, g2) = results
    assert c1 == c2 and all(c > 0 for c in c1)
    assert torch.allclose(o1, o2, atol=1e-6)  # same spikes; only the summation order differs
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", *FAST])
@pytest.mark.parametrize("arch", ["vgg_tiny", "resnet_tiny"])
def test_channels_last_spikes_are_the_same_network(backend, arch, conv_input_layouts):
    """Every backend, channels-last or not: the same spikes and outputs (the convs' summation
    order aside), the same gradients, and with it every conv gets channels-last input."""
    lif_of(backend)
    torch.manual_seed(0)
    ann = ANN(build_config(arch, (3, 8, 8), 10)).to(DEVICE)      # 3 channels: a layout one channel would not show
    x = torch.rand(6, 3, 8, 8).to(DEVICE) * 2 - 1
    results = []
    for laid_out in (False, True):
        snn = SNN(ann, [0.6] * len(neuron_layers(ann.cfg)), leak=0.9, backend=backend, channels_last=laid_out).train()
        ann.zero_grad()
        out = []
        layouts = conv_input_layouts(lambda: out.append(
            snn(x, 9, window=4, generator=torch.Generator(device=DEVICE).manual_seed(3))))
        torch.nn.functional.cross_entropy(out[0], torch.arange(6, device=DEVICE) % 10).backward()
        assert all(layouts) if laid_out else not any(layouts)
        results.append((out[0].detach(), list(snn.spike_counts), [p.grad.clone() for p in ann.parameters()]))
    (o1, c1, g1), (o2, c2, g2) = results
    assert c1 == c2 and all(c > 0 for c in c1)
    assert torch.allclose(o1, o2, atol=1e-5)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_backend_choice():
    assert neuron_backend("auto", torch.device("cpu")) is lif_numba
    assert neuron_backend("auto", torch.device("cpu"), "spikebp") is lif_multistep
    with pytest.raises(ValueError, match="unknown backend 'cupy'"):
        neuron_backend("cupy", torch.device("cpu"))


@pytest.mark.parametrize("backend", ["reference", "multistep"])
def test_spikebp_gradient_by_hand_on_two_neurons(backend):
    """Lee 2020's derivative on two LIF neurons (theta 1, leak 0.9), dL/do_t = 1, 2, 3, 4.
    A: u = 0.6, 1.14 (fires), 0.226, 1.7034 (fires); c = 1 + ln 0.9 * (0.9**2 + 1) / 2;
    its gradient reaches a current only through the next spike: dL/dI = 2c, 2c, 4c, 4c.
    B never fires: no gradient at all."""
    current = torch.tensor([[0.6, 0.2], [0.6, 0.2], [0.2, 0.2], [1.5, 0.2]], dtype=torch.float64,
                           requires_grad=True)
    lif = neuron_backend(backend, torch.device("cpu"), "spikebp")
    spikes, _ = lif(current, NeuronState.zeros(current[0].detach()), 1.0, 0.9, 0, Surrogate("spikebp"),
                    torch.zeros(5))
    assert spikes.detach().tolist() == [[0, 0], [1, 0], [0, 0], [1, 0]]
    (spikes * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)[:, None]).sum().backward()
    c = 1 + math.log(0.9) * (0.81 + 1) / 2
    expected = torch.tensor([[2 * c, 0], [2 * c, 0], [4 * c, 0], [4 * c, 0]], dtype=torch.float64)
    assert torch.allclose(current.grad, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("leak", [1.0, 0.9])
@pytest.mark.parametrize("shape,windows", [((9, 3, 5), [9]), ((9, 2, 4, 3, 3), [4, 5])])
def test_spikebp_multistep_matches_reference_and_fused_refuses_it(leak, shape, windows):
    current = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.3
    spikebp = Surrogate("spikebp")
    ref = run_windows(lif_reference, current, spikebp, 0.7, leak, windows)
    got = run_windows(neuron_backend("multistep", DEVICE, "spikebp"), current, spikebp, 0.7, leak, windows)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[2].u, ref[2].u.detach())
    assert torch.allclose(got[1], ref[1], **GRAD_TOLERANCE) and got[1].abs().sum() > 0
    assert neuron_backend("auto", torch.device("cuda"), "spikebp") is lif_multistep
    with pytest.raises(ValueError, match="fused backend has no spikebp"):
        neuron_backend("fused", DEVICE, "spikebp")
