"""Positional encodings of the Siren(SH) paper's comparison (filled in by the encoder-zoo work)."""
