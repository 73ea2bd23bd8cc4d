"""Your own PyTorch network through the chain: two networks written in plain PyTorch
(none of the project's model code), trained briefly with a plain loop, then imported.

    .venv/bin/python examples/own_network.py runs/own          # trains both, saves their state_dicts
    .venv/bin/python -m trainer import examples/own_network.py:vgg --weights runs/own/vgg.pt \\
        --dataset digits --out runs/own/ann.pt
    .venv/bin/python -m trainer convert runs/own/ann.pt --timesteps 8
    .venv/bin/python -m export.to_lava runs/own/converted.pt --out runs/own/export

The modules take the data set's images as the chain normalises them
(``trainer.data.load_dataset`` and its ``Normalisation``), which is how they are trained here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def vgg(num_classes: int = 10) -> nn.Sequential:
    """A small VGG with batch norms for 8x8 single-channel digits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.Dropout(0.1),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet whose forward adds its shortcuts."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.block1 = BasicBlock(16, 16, 1)
        self.block2 = BasicBlock(16, 32, 2)
        self.fc = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.fc(torch.flatten(x, 1))


def train(module: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 3, seed: int = 0) -> nn.Module:
    """A plain PyTorch training loop: SGD with momentum, batches of 64."""
    torch.manual_seed(seed)
    opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for i in range(0, len(images), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(module(images[idx]), labels[idx]).backward()
            opt.step()
    return module.eval()


if __name__ == "__main__":
    from trainer.data import load_dataset

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/own")
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("digits")
    images, test = data.normalisation.apply(data.train_x), data.normalisation.apply(data.test_x)
    torch.manual_seed(0)                   # the initial weights
    for name, module in (("vgg", vgg()), ("resnet", ResNet())):
        train(module, images, data.train_y)
        with torch.no_grad():
            acc = float((module(test).argmax(1) == data.test_y).float().mean() * 100)
        torch.save(module.state_dict(), out / f"{name}.pt")
        print(f"{name}: test accuracy {acc:.2f} % -> {out / name}.pt")
