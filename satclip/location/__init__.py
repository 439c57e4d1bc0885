"""The location tower: positional encodings of (lon, lat) (or of (lon, lat, t): ``sphericalharmonics_time``),
networks, and their composition.

Public names: ``SphericalHarmonics``, ``SphericalHarmonicsTime``, ``spherical_harmonics``, ``LocationEncoder``,
``build_location_encoder``, ``truncate_location_encoder``, ``with_last_affine``, and the registries
``POSITIONAL_ENCODINGS`` and ``NETWORKS``.
"""

from . import encodings, harmonics, networks, temporal  # noqa: F401  (import registers the classes)
from .encoder import LocationEncoder, build_location_encoder, truncate_location_encoder, with_last_affine
from .harmonics import SphericalHarmonics, spherical_harmonics
from .registry import NETWORKS, POSITIONAL_ENCODINGS, register_encoding, register_network
from .temporal import SphericalHarmonicsTime

__all__ = [
    "LocationEncoder",
    "NETWORKS",
    "POSITIONAL_ENCODINGS",
    "SphericalHarmonics",
    "SphericalHarmonicsTime",
    "build_location_encoder",
    "register_encoding",
    "register_network",
    "spherical_harmonics",
    "truncate_location_encoder",
    "with_last_affine",
]
