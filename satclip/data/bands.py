"""Sentinel-2 band orders: what the readers, the loader and the image towers agree on (no torch here:
the shard writer's worker processes import it)."""

from __future__ import annotations

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
"""Band order of S2-100K patches (12 bands, no B10)."""
S2_BANDS_13 = S2_BANDS[:10] + ("B10",) + S2_BANDS[10:]
"""Band order of the 13-band Sentinel-2 backbones (B10 at index 10)."""
ZERO_BANDS = ("B10",)
"""Bands that may be synthesised as zeros when the source lacks them (B10, cirrus, is not in L2A)."""

__all__ = ["S2_BANDS", "S2_BANDS_13", "ZERO_BANDS"]
