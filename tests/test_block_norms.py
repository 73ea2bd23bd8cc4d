"""Batch norms inside residual blocks: what lets a deep residual ANN (ResNet20) train, and
their fold at conversion into conv1, conv2 and the 1x1 shortcut."""
import torch

from trainer.layers import ResBlock
from trainer.models import ANN, build_config
from trainer.norms import fold_ann_norms


def _blocks(cfg):
    return [i for i, layer in enumerate(cfg.layers) if isinstance(layer, ResBlock)]


def test_normed_residual_nets_have_a_norm_after_every_conv_of_every_block():
    cfg = build_config("resnet20", (3, 32, 32), 10, norm=True)
    ann = ANN(cfg)
    blocks = _blocks(cfg)
    assert len(blocks) == 8 and all(cfg.layers[i].norm for i in blocks)
    for i in blocks:
        projects = ann.layers[i].shortcut is not None
        assert sorted(ann.norms[str(i)]) == sorted(["conv1", "conv2"] + (["shortcut"] if projects else []))
    assert not any(layer.norm for layer in build_config("resnet20", (3, 32, 32), 10).layers if hasattr(layer, "norm"))


def test_block_norms_keep_the_scale_of_the_sum_through_resnet20():
    """Without them each block adds its branch's variance to the shortcut's, so the sum's
    scale grows with depth (about 5x over ResNet20's eight blocks at its He-normal start,
    where the unnormalised ANN's loss went to nan within five steps on CIFAR-10)."""
    x = torch.randn(16, 3, 32, 32)

    def block_scales(norm: bool) -> list[float]:
        torch.manual_seed(0)
        cfg = build_config("resnet20", (3, 32, 32), 10, conv_dropout=0.0, norm=norm)
        record = []
        with torch.no_grad():
            ANN(cfg).train()(x, record=record)
        return [float(a.std()) for a in record[4::2]]          # each block's output (after its sum)

    plain, normed = block_scales(False), block_scales(True)
    assert plain[-1] / plain[0] > 3.0
    assert max(normed) / min(normed) < 1.5


def test_block_norms_fold_into_conv1_conv2_and_the_projection():
    torch.manual_seed(0)
    cfg = build_config("resnet_tiny", (1, 8, 8), 10, conv_dropout=0.0, norm=True)
    ann = ANN(cfg).train()
    for _ in range(3):                                  # running statistics away from (0, 1)
        ann(torch.randn(16, 1, 8, 8) * 2 + 0.5)
    for m in ann.norms.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    ann.eval()
    folded_cfg, state = fold_ann_norms(cfg, ann.state_dict())
    assert not folded_cfg.normed and all(folded_cfg.layers[i].bias for i in _blocks(folded_cfg))
    assert not any(k.startswith("norms.") for k in state)
    folded = ANN(folded_cfg).eval()
    folded.load_state_dict(state)                      # strict: a bias for every conv of every block
    x = torch.randn(32, 1, 8, 8)
    with torch.no_grad():
        reference = ann(x)
        assert torch.allclose(folded(x), reference, atol=1e-4 * float(reference.abs().max()))
