"""QCFS's two implementations on the same cases: the reference expression (trainer.qcfs) and the
compiled CPU kernels (trainer.qcfs_numba). fp32: the same numbers and the same dL/dx, bit for
bit; bf16: the fp32 reference on the exactly widened input, cast to bf16; lambda's gradient
within rounding (summed in another order)."""
from __future__ import annotations

import pytest
import torch

from trainer import qcfs_numba
from trainer.models import ANN, build_config
from trainer.qcfs import qcfs
from trainer.qcfs_numba import activation, qcfs_numba as qcfs_kernels

BACKENDS = {"reference": qcfs, "numba": qcfs_kernels}
CASES = {"conv": (6, 5, 9, 7), "conv channels-last": (6, 5, 9, 7), "dense": (40, 33), "one block and a bit":
         (qcfs_numba.BLOCK + 3,)}


def _case(name: str, dtype):
    gen = torch.Generator().manual_seed(len(name))
    x = torch.randn(CASES[name], generator=gen) * 3
    x.view(-1)[:4] = torch.tensor([0.0, -0.0, 2.5, 2.5 / 16])        # on a level's edge and at the clip
    g = torch.randn(CASES[name], generator=gen)
    if name.endswith("channels-last"):
        x, g = (t.contiguous(memory_format=torch.channels_last) for t in (x, g))
    return x.to(dtype), g.to(dtype)


def _run(fn, x, g, levels=8):
    """(output, dL/dx, dL/dlambda) where the output is computed in fp32 and cast to x's dtype for
    the reference (its own bf16 arithmetic rounds after every operation), in x's dtype otherwise."""
    lam = torch.tensor([2.5, 7.0], requires_grad=True)
    leaf = (x.detach().float() if fn is qcfs else x.detach()).clone(memory_format=torch.preserve_format)
    leaf.requires_grad_()
    y = fn(leaf, lam[0], levels).to(x.dtype)
    y.backward(g)
    return y.detach(), leaf.grad.to(x.dtype), lam.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", list(CASES))
def test_qcfs_backends_agree(case, dtype):
    x, g = _case(case, dtype)
    ref_y, ref_gx, ref_glam = _run(BACKENDS["reference"], x, g)
    y, gx, glam = _run(BACKENDS["numba"], x, g)
    assert torch.equal(y, ref_y) and torch.equal(gx, ref_gx)
    assert y.stride() == x.stride() and gx.stride() == x.stride()
    assert glam[1] == 0 and torch.allclose(glam, ref_glam, rtol=1e-5, atol=1e-6)
    assert set(torch.unique(y.float() / 2.5 * 8).round().tolist()) == set(range(9))


def test_qcfs_kernels_take_a_gradient_of_another_layout():
    x, g = _case("conv channels-last", torch.float32)
    _, ref_gx, _ = _run(qcfs, x, g)
    _, gx, _ = _run(qcfs_kernels, x, g.contiguous())
    assert torch.equal(gx, ref_gx)


def test_qcfs_activation_keeps_the_reference_where_the_kernels_do_not_reach():
    x = torch.randn(3, 4, dtype=torch.float64)
    lam = torch.tensor(1.5, dtype=torch.float64)
    assert torch.equal(activation(x, lam, 4), qcfs(x, lam, 4))
    with pytest.raises(ValueError, match="dense fp32 or bf16 CPU"):
        qcfs_kernels(x, lam, 4)
    strided = torch.randn(4, 6)[:, ::2]
    assert not qcfs_numba.takes(strided)
    assert torch.equal(activation(strided, lam.float(), 4), qcfs(strided, lam.float(), 4))


def test_ann_trains_the_same_through_either_backend():
    """A QCFS ANN's loss and parameter gradients with the kernels equal the reference's (fp32)."""
    torch.manual_seed(0)
    ann = ANN(build_config("vgg_tiny", (1, 8, 8), 10, conv_dropout=0.0, fc_dropout=0.0, norm=True, quant_levels=4))
    x, y = torch.rand(16, 1, 8, 8) * 2 - 1, torch.randint(0, 10, (16,))

    def grads():
        ann.zero_grad()
        loss = torch.nn.functional.cross_entropy(ann(x), y)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in ann.parameters()]

    loss, kernels = grads()
    assert ANN.qcfs_activation is activation
    ann.qcfs_activation = qcfs
    ref_loss, reference = grads()
    assert torch.equal(loss, ref_loss)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(kernels, reference))
