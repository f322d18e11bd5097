"""The networks the job kinds train, kept together so a later job (finetune, features)
rebuilds an earlier job's network from the `arch` dict its checkpoint holds.

Import this module only from inside a kind's run(): it imports torch at the top, and the
API imports every kind module to list kinds without loading torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """`depth` hidden layers of `hidden` units, tanh (or leaky ReLU) between them."""

    def __init__(
        self,
        in_features: int = 1,
        hidden: int = 64,
        depth: int = 2,
        out_features: int = 1,
        activation: str = "tanh",
    ):
        super().__init__()
        sizes = [in_features] + [hidden] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False))
        self.out = nn.Linear(sizes[-1], out_features)
        self.act = {"tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.out(x)


class DigitsNet(nn.Module):
    """pytorch/examples' MNIST network, sized by the image side: 8 (digits) or 28 (MNIST)."""

    def __init__(
        self,
        side: int = 8,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 128,
        classes: int = 10,
    ):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 3, 1)
        self.conv2 = nn.Conv2d(c1, c2, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        pooled = (side - 4) // 2  # two unpadded 3x3 convolutions, then a 2x2 max-pool
        self.fc1 = nn.Linear(c2 * pooled * pooled, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


class DCGenerator(nn.Module):
    """Noise -> a 1x16x16 image in [-1, 1]: a projection, then two transposed convolutions."""

    def __init__(self, noise_dim: int = 16, width: int = 32):
        super().__init__()
        self.width = width
        self.project = nn.Sequential(
            nn.Linear(noise_dim, 2 * width * 4 * 4), nn.BatchNorm1d(2 * width * 4 * 4), nn.ReLU()
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),  # 4x4 -> 8x8
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),  # 8x8 -> 16x16
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.project(z).view(-1, 2 * self.width, 4, 4))


class DCDiscriminator(nn.Module):
    """A 1x16x16 image -> one logit: two strided convolutions with LeakyReLU, as in DCGAN."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1),  # 16x16 -> 8x8
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1),  # 8x8 -> 4x4
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * 4 * 4, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class SharedTwice(nn.Module):
    """One nn.Linear applied twice: both uses read (and train) the same parameters."""

    def __init__(self, features: int = 64, hidden: int = 32, classes: int = 10):
        super().__init__()
        self.inp = nn.Linear(features, hidden)
        self.shared = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.inp(x))
        x = torch.relu(self.shared(x))
        x = torch.relu(self.shared(x))
        return self.out(x)


class CharRNN(nn.Module):
    """A character-level language model: embedding, an LSTM or GRU, a linear read-out."""

    def __init__(self, vocab: int, embed: int = 64, hidden: int = 256, layers: int = 1, cell: str = "lstm",
                 dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(embed, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, state: object = None) -> tuple[torch.Tensor, object]:
        """Logits (batch, time, vocab) for a batch of index sequences, and the RNN's last state."""
        h, state = self.rnn(self.embed(x), state)
        return self.out(self.drop(h)), state
