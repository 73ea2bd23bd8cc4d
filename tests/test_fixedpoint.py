"""The reference itself (export.fixedpoint) against cases computed by hand: the order of
reset and leak, Lava's 24-bit wraps, voltage saturation, decay rounding, the weight
exponent's floor and the output accumulator. (The other backends are held to the
reference by tests/test_conformance.py.)"""
import numpy as np

from export import fixedpoint as fx
from export.graph import Core, CoreGraph
from records.encoding import InputEncoding

HALF = 2 ** 23


def one_neuron_graph(weight, vth, dv=0, weight_exp=0, spiking=True, steps=5):
    core = Core("n", "dense", np.array([[weight]]), (1, 1, 1), (1,), vth=vth, dv=dv, weight_exp=weight_exp,
                spiking=spiking)
    if not spiking:
        return CoreGraph(InputEncoding.of((1, 1, 1), [0.0], [1.0]), [core], timesteps=steps, class_names=["a"])
    out = Core("out", "dense", np.array([[2]]), (1,), (1,), vth=0, spiking=False)
    return CoreGraph(InputEncoding.of((1, 1, 1), [0.0], [1.0]), [core, out], timesteps=steps, class_names=["a"])


def ones(steps):
    return np.ones((steps, 1, 1, 1, 1), dtype=np.int8)


def test_soft_reset_comes_after_the_leak_at_the_next_step():
    # weight 2, input 1 every step: a = 2, u = a << 6 = 128; vth = 2 -> 128; dv = 2048 halves v.
    # t0: v = 0/2 + 128 = 128           (not > 128: no spike)
    # t1: v = 128/2 + 128 = 192         spike
    # t2: v = 192/2 + 128 - 128 = 96    (a reset inside the leak, (192 - 128)/2 + 128 = 160, would spike)
    # t3: v = 96/2 + 128 = 176          spike
    # t4: v = 176/2 + 128 - 128 = 88
    run = fx.run_reference(one_neuron_graph(2, 2, dv=2048), ones(5))
    assert run.spikes[0][:, 0, 0].tolist() == [0, 1, 0, 1, 0]
    # the output accumulator: a = 2 * spikes, never resets, never leaks: (2 + 2) << 6
    assert run.output.tolist() == [[256]]


def test_threshold_is_strictly_greater():
    run = fx.run_reference(one_neuron_graph(2, 2), ones(3))       # v = 128, 256, 256 - 128 + 128 = 256
    assert run.spikes[0][:, 0, 0].tolist() == [0, 1, 1]


def test_wrap24_is_lavas_single_wrap():
    x = np.array([0, HALF, HALF + 1, -HALF, -HALF - 1, 3 * HALF])
    # x > 2**23 loses 2**24 once; x <= -2**23 gains 2**24 once (so -2**23 becomes +2**23)
    assert fx.wrap24(x).tolist() == [0, HALF, -HALF + 1, HALF, HALF - 1, HALF]


def test_current_wraps_before_it_reaches_the_voltage():
    # 5 inputs of weight 254, weight_exp 7: a = 1270 << 7 = 162,560; a << 6 = 10,403,840 > 2**23
    # wraps to 10,403,840 - 2**24 = -6,373,376 before it is added to v
    core = Core("out", "dense", np.full((1, 5), 254), (1, 1, 5), (1,), vth=0, weight_exp=7, spiking=False)
    g = CoreGraph(InputEncoding.of((1, 1, 5), [0.0], [1.0]), [core], timesteps=1, class_names=["a"])
    assert fx.run_reference(g, np.ones((1, 1, 1, 1, 5), dtype=np.int8)).output.tolist() == [[-6_373_376]]


def test_voltage_saturates_at_24_bits():
    # weight 254 << 7 = 32512 per step, << 6 = 2,080,768: 4 steps 8,323,072, the 5th clips at 2**23 - 1
    g = one_neuron_graph(254, 0, weight_exp=7, spiking=False, steps=5)
    assert fx.run_reference(g, ones(4)).output.tolist() == [[4 * 2_080_768]]
    assert fx.run_reference(g, ones(5)).output.tolist() == [[fx.V_MAX]]
    assert fx.run_reference(g, -ones(5)).output.tolist() == [[-fx.V_MAX]]


def test_decay_rounds_toward_zero():
    # y = v * (4096 - dv); decay = sign(y) * (|y| >> 12)
    assert fx.decay(np.array([3, -3, -1, 4095]), 2048).tolist() == [1, -1, 0, 2047]
    assert fx.decay(np.array([-1, 1]), 1).tolist() == [0, 0]            # 4095 / 4096 of 1 -> 0
    assert fx.decay(np.array([-5000]), 0).tolist() == [-5000]            # dv = 0: no leak


def test_negative_weight_exponent_floors():
    # Lava shifts the dense sum arithmetically: -3 >> 1 = -2 (floor), 3 >> 1 = 1
    assert fx.shift_by_exp(np.array([-3, 3, -4]), -1).tolist() == [-2, 1, -2]
    assert fx.shift_by_exp(np.array([-3]), 2).tolist() == [-12]


def test_conv_sum_wraps_to_signed_24_bit():
    core = Core("c", "conv", np.full((1, 4200, 4, 4), 127), (4200, 4, 4), (1, 1, 1), vth=1, spiking=False)
    a = fx.synaptic_input(core, np.ones((1, 4200, 4, 4), dtype=np.int8))
    assert a.item() == 127 * 4200 * 16 - 2 ** 24                     # 8,534,400 wraps to -8,242,816
    assert fx.wrap_signed(np.array([HALF - 1, HALF, -HALF, -HALF - 1]), 24).tolist() == [HALF - 1, -HALF, -HALF,
                                                                                          HALF - 1]
