"""The location tower: a positional encoding followed by a network, built by name."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..geo import validate_lonlat
from . import fused
from .registry import NETWORKS, POSITIONAL_ENCODINGS, accepted_kwargs


def with_time_column(lonlat: torch.Tensor, time: torch.Tensor | None) -> torch.Tensor:
    """(B, 2) [lon, lat] and (B,) times (None: all unknown) -> (B, 3) float64 [lon, lat, t], a time-aware tower's input."""
    lonlat = lonlat.to(torch.float64)
    if time is None:
        column = torch.full_like(lonlat[:, :1], math.nan)
    else:
        column = time.to(device=lonlat.device, dtype=torch.float64).reshape(-1, 1)
        if column.shape[0] != lonlat.shape[0]:
            raise ValueError(f"time: {column.shape[0]} values for {lonlat.shape[0]} locations")
    return torch.cat([lonlat, column], dim=1)


class LocationEncoder(nn.Module):
    """(N, 2) [lon, lat] degrees -> (N, output_dim) embeddings; a time-aware tower (its encoding has
    ``takes_time = True``, e.g. ``sphericalharmonics_time``) takes (N, 3) [lon, lat, t], t in Unix
    seconds UTC, NaN where unknown (``takes_time``, ``input_dim``).

    Coordinates are validated (``ValueError`` naming the bad rows; longitudes outside
    [-180, 180] are wrapped). The encoding is computed in float64 and cast to the network's dtype,
    so ``.double()`` gives the released checkpoints' float64 tower and ``.float()`` a float32 one.
    Attribute names (``posenc``, ``nnet``) match the released checkpoints (``location.nnet.*``).
    ``matryoshka_dims``: the nested prefixes it was trained with (None: standard training), see
    :func:`truncate_location_encoder`.
    """

    def __init__(self, positional_encoding: nn.Module, network: nn.Module, *, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.posenc = positional_encoding
        self.nnet = network
        self.config = dict(config or {})
        self.matryoshka_dims: list[int] | None = None

    @property
    def output_dim(self) -> int:
        last = [p for p in self.nnet.parameters() if p.ndim == 2][-1]
        return int(last.shape[0])

    @property
    def takes_time(self) -> bool:
        """Whether the tower takes [lon, lat, t] (a time-aware encoding) rather than [lon, lat]."""
        return bool(getattr(self.posenc, "takes_time", False))

    @property
    def input_dim(self) -> int:
        """Input columns: 3 for a time-aware tower, else 2."""
        return 3 if self.takes_time else 2

    @property
    def dtype(self) -> torch.dtype:
        return next(self.nnet.parameters()).dtype

    def forward(self, lonlat: torch.Tensor) -> torch.Tensor:
        lonlat = validate_lonlat(lonlat, with_time=self.takes_time)
        if fused.applies(self.posenc, self.nnet, lonlat=lonlat):  # inference of a SH-SIREN on CPU: the same numbers, chunked
            return fused.siren_harmonics_forward(self.posenc, self.nnet, lonlat=lonlat)  # type: ignore[arg-type]
        feats = self.posenc(lonlat.to(torch.float64))
        return self.nnet(feats.to(self.dtype))

    def save_pretrained(self, directory: str | Path, push_to_hub: str | None = None, *, token: str | None = None) -> Path:
        """Write the tower as ``config.json`` + ``model.safetensors`` (``satclip export``'s layout) and
        optionally upload the folder to the Hub repository ``push_to_hub``; returns the folder."""
        from ..hubfiles import push_folder
        from .serialization import export_config, write_config, write_weights

        encoder = self.cpu().eval()
        folder = write_weights(encoder, directory)
        write_config(folder, export_config(encoder))
        if push_to_hub is not None:
            push_folder(folder, push_to_hub, token=token)
        return folder

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str | torch.device = "cpu", *, dtype: str | torch.dtype | None = None) -> LocationEncoder:
        """A tower saved by ``save_pretrained`` / ``satclip export``: a folder, or a Hub repository holding
        one (``owner/repo`` or ``hf-hub:owner/repo``), from the cache if present; in eval mode.

        Checkpoints, released model names and URLs load with ``satclip.load_location_encoder``.
        """
        from ..hubfiles import HF_HUB_PREFIX, fetch
        from .serialization import EXPORT_FILES, as_dtype, read_export

        text = str(source)
        folder = Path(text).expanduser()
        if not folder.is_dir():
            repo_id = text.removeprefix(HF_HUB_PREFIX)
            if repo_id.count("/") != 1 or not all(repo_id.split("/")) or Path(repo_id).suffix:
                raise ValueError(
                    f"{text!r}: from_pretrained takes an export folder or a Hub repository id (owner/repo); "
                    "for a checkpoint, a released model name or a URL use satclip.load_location_encoder"
                )
            folder = fetch(repo_id, EXPORT_FILES, what=f"exported tower {text!r} (no local folder of that name exists)")[0].parent
        encoder = read_export(folder)
        if dtype is not None:
            encoder = encoder.to(as_dtype(dtype))
        return encoder.to(device).eval()


def build_location_encoder(
    pe: str = "sphericalharmonics",
    nn: str = "siren",
    *,
    output_dim: int = 256,
    dtype: torch.dtype = torch.float64,
    **hparams: Any,
) -> LocationEncoder:
    """Build a location tower by name, e.g. ``build_location_encoder("sphericalharmonics", "siren", legendre_polys=10)``.

    ``hparams`` go to whichever of the encoding and the network accepts them (e.g. legendre_polys,
    frequency_num, min_radius, max_radius; dim_hidden, num_layers, dropout). An unknown name or a
    hyper-parameter neither accepts raises ``ValueError``. Defaults give the released Siren(SH):
    L=10, 2 hidden layers of 512, 256 outputs, float64.
    """
    if pe not in POSITIONAL_ENCODINGS:
        raise ValueError(f"unknown positional encoding {pe!r}; choose from {sorted(POSITIONAL_ENCODINGS)}")
    if nn not in NETWORKS:
        raise ValueError(f"unknown network {nn!r}; choose from {sorted(NETWORKS)}")
    pe_cls, nn_cls = POSITIONAL_ENCODINGS[pe], NETWORKS[nn]
    pe_kwargs = accepted_kwargs(pe_cls, hparams)
    nn_kwargs = accepted_kwargs(nn_cls, hparams)
    unknown = sorted(set(hparams) - set(pe_kwargs) - set(nn_kwargs))
    if unknown:
        raise ValueError(f"hyper-parameters {unknown} are accepted neither by encoding {pe!r} nor by network {nn!r}")
    posenc = pe_cls(**pe_kwargs)
    network = nn_cls(posenc.output_dim, output_dim, **nn_kwargs)
    config = {"pe": pe, "nn": nn, "output_dim": output_dim, **hparams}
    return LocationEncoder(posenc, network, config=config).to(dtype)


def _last_affine_keys(encoder: LocationEncoder) -> tuple[str, str]:
    """State-dict keys of the tower's last affine map: every network ends with one (weight, bias)."""
    w_key, b_key = list(encoder.state_dict())[-2:]
    if not (w_key.endswith("weight") and b_key.endswith("bias")):
        raise ValueError(f"the location tower does not end with an affine layer (its last parameters are {w_key!r}, {b_key!r})")
    return w_key, b_key


def with_last_affine(encoder: LocationEncoder, weight: torch.Tensor, *, bias: torch.Tensor) -> LocationEncoder:
    """A copy of ``encoder`` (rebuilt from its config, same dtype, eval mode) whose last affine map is
    ``(weight, bias)``: ``weight.shape[0]`` outputs. ``matryoshka_dims`` is carried over."""
    w_key, b_key = _last_affine_keys(encoder)
    state = encoder.state_dict()
    state[w_key], state[b_key] = weight.to(encoder.dtype), bias.to(encoder.dtype)
    out = build_location_encoder(**{**encoder.config, "output_dim": int(weight.shape[0])}, dtype=encoder.dtype)
    out.load_state_dict(state)
    out.matryoshka_dims = encoder.matryoshka_dims
    return out.to(next(encoder.parameters()).device).eval()


def truncate_location_encoder(encoder: LocationEncoder, dim: int) -> LocationEncoder:
    """The tower whose outputs are the first ``dim`` of ``encoder``'s (its last affine map's first
    ``dim`` rows), for Matryoshka-trained towers (``matryoshka_dims``) whose leading prefixes stand alone.

    ``dim`` = ``output_dim`` returns ``encoder`` itself; ``dim`` outside 1..``output_dim`` raises
    ``ValueError``; a ``dim`` the tower was not trained at (not one of its ``matryoshka_dims``, or none)
    warns. The prefix is not L2-normalised: where embeddings are used normalised, normalise it again.
    """
    full = encoder.output_dim
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= full:
        raise ValueError(f"dim={dim!r}: the embedding can be truncated to 1..{full} dimensions (the tower's output_dim)")
    if dim == full:
        return encoder
    trained = encoder.matryoshka_dims
    if not trained:
        warnings.warn(
            f"truncating to dim={dim}: this tower was not trained with Matryoshka prefixes (no matryoshka_dims), "
            f"so its first {dim} of {full} dimensions were not trained to stand alone",
            stacklevel=2,
        )
    elif dim not in trained:
        warnings.warn(f"truncating to dim={dim}: this tower was trained with Matryoshka prefixes {trained}; {dim} is not one of them", stacklevel=2)
    w_key, b_key = _last_affine_keys(encoder)
    state = encoder.state_dict()
    return with_last_affine(encoder, state[w_key][:dim], bias=state[b_key][:dim])
