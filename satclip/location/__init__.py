"""The location tower: positional encodings of (lon, lat), networks, and their composition.

Public names: ``SphericalHarmonics``, ``spherical_harmonics``, ``LocationEncoder``,
``build_location_encoder``, ``truncate_location_encoder``, ``with_last_affine``, and the registries ``POSITIONAL_ENCODINGS`` and ``NETWORKS``.
"""

from . import encodings, harmonics, networks  # noqa: F401  (import registers the classes)
from .encoder import LocationEncoder, build_location_encoder, truncate_location_encoder, with_last_affine
from .harmonics import SphericalHarmonics, spherical_harmonics
from .registry import NETWORKS, POSITIONAL_ENCODINGS, register_encoding, register_network

__all__ = [
    "LocationEncoder",
    "NETWORKS",
    "POSITIONAL_ENCODINGS",
    "SphericalHarmonics",
    "build_location_encoder",
    "register_encoding",
    "register_network",
    "spherical_harmonics",
    "truncate_location_encoder",
    "with_last_affine",
]
