"""Networks of the location tower: linear, mlp, fcnet (residual) and siren.

Each maps (N, input_dim) features to (N, output_dim) and is registered by name for
``build_location_encoder``. SIREN parameter names match the released SatCLIP checkpoints:
``layers.{i}.weight/bias`` and ``last_layer.weight/bias``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .encodings import integer_hparam
from .registry import register_network


@register_network("linear")
class Linear(nn.Module):
    """A single affine map: the encoding alone has to carry the signal."""

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer = nn.Linear(input_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


@register_network("mlp")
class MLP(nn.Module):
    """ReLU multilayer perceptron: ``num_layers`` hidden layers of width ``dim_hidden``, then a linear output."""

    def __init__(self, input_dim: int, output_dim: int, *, dim_hidden: int = 256, num_layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        dim_hidden = integer_hparam("dim_hidden", dim_hidden)
        layers: list[nn.Module] = []
        width = input_dim
        for _ in range(integer_hparam("num_layers", num_layers, minimum=0)):
            layers += [nn.Linear(width, dim_hidden), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = dim_hidden
        layers.append(nn.Linear(width, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ResidualBlock(nn.Module):
    """Linear-ReLU-Dropout-Linear-ReLU with a skip connection (Mac Aodha et al., 2019)."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(width, width), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


@register_network("fcnet")
class FCNet(nn.Module):
    """The residual fully connected network of Mac Aodha et al. (2019), "Presence-only geographical priors".

    Linear(input_dim, dim_hidden) + ReLU, ``num_layers`` residual blocks (4 in the paper; the
    Siren(SH) comparison keeps 4 and tunes only ``dim_hidden``) with dropout 0.5 inside each block,
    as in the paper, then a linear output layer. Unlike the paper's, the output layer has a bias:
    every tower then ends with an affine map into which a linear head can be folded exactly.
    """

    def __init__(self, input_dim: int, output_dim: int, *, dim_hidden: int = 256, num_layers: int = 4, dropout: float = 0.5) -> None:
        super().__init__()
        dim_hidden = integer_hparam("dim_hidden", dim_hidden)
        num_layers = integer_hparam("num_layers", num_layers, minimum=0)
        self.stem = nn.Sequential(nn.Linear(input_dim, dim_hidden), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_ResidualBlock(dim_hidden, dropout) for _ in range(num_layers)])
        self.head = nn.Linear(dim_hidden, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class SirenLayer(nn.Module):
    """y = sin(w0 dropout(W x + b)); ``activation=False`` gives the plain affine output layer.

    Initialisation (Sitzmann et al., 2020): first layer U(-1/d, 1/d), others
    U(-sqrt(c/d)/w0, sqrt(c/d)/w0) with c = 6, d the input width.
    """

    def __init__(self, dim_in: int, dim_out: int, *, w0: float = 1.0, is_first: bool = False, activation: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.w0 = w0
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(dim_out, dim_in))
        self.bias = nn.Parameter(torch.empty(dim_out))
        bound = 1.0 / dim_in if is_first else math.sqrt(6.0 / dim_in) / w0
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.linear(x, self.weight, self.bias)
        if self.activation:
            y = torch.sin(self.w0 * self.dropout(y))  # dropout on the pre-activation, as in SatCLIP's SIREN
        return y

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, w0={self.w0}, activation={self.activation}"


@register_network("siren")
class SirenNet(nn.Module):
    """SIREN: ``num_layers`` sine layers of width ``dim_hidden`` (w0_initial on the first) and a linear output layer."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        *,
        dim_hidden: int = 512,
        num_layers: int = 2,
        w0: float = 1.0,
        w0_initial: float = 30.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dim_hidden = integer_hparam("dim_hidden", dim_hidden)
        num_layers = integer_hparam("num_layers", num_layers, minimum=0)
        self.layers = nn.ModuleList(
            SirenLayer(
                input_dim if i == 0 else dim_hidden,
                dim_hidden,
                w0=w0_initial if i == 0 else w0,
                is_first=i == 0,
                dropout=dropout,
            )
            for i in range(num_layers)
        )
        self.last_layer = SirenLayer(dim_hidden if num_layers else input_dim, output_dim, w0=w0, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.last_layer(x)
