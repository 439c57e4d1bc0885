"""Image payload codecs for shard samples: the original GeoTIFF bytes, and ``s2c``, a fast format.

A shard sample carries its image under one of :data:`PAYLOAD_EXTENSIONS`:

- ``tif``: the source GeoTIFF bytes unchanged (lossless, keeps the georeference), decoded with
  rasterio. An LZW patch of 256x256x12 costs about 9 ms of one core to decode.
- ``s2c``: a small header followed by a Blosc buffer (LZ4, byte shuffle of the 2-byte values) of
  the little-endian array, checked with a CRC-32; it round-trips bit-exactly. Per 256x256x12 uint16
  patch of the sample S2-100K and Major TOM corpora, one core (min of 3 runs, a loaded machine):

  ==============================  ========  ========  ================
  Blosc codec (byte shuffle)      encode    decode    size (x the tif)
  ==============================  ========  ========  ================
  LZ4, clevel 9 (``s2c``)         0.9 ms    0.33 ms   0.74
  LZ4HC, clevel 1                 3.4 ms    0.33 ms   0.70
  LZ4HC, clevel 7                 26 ms     0.26 ms   0.62
  zstd, clevel 1                  2.9 ms    1.45 ms   0.59
  BloscLZ, clevel 9               1.6 ms    0.59 ms   0.94
  ==============================  ========  ========  ================

  LZ4 keeps decoding about 25x faster than the LZW GeoTIFF (8-9 ms) and encoding cheap enough that
  ``satclip shards`` writes Major TOM at more than the rate of merely reading its bands
  (``scripts/bench_majortom.py``); LZ4HC's 16 % smaller payloads cost 30x the encoding time. Earlier
  measured: LZ4 without the shuffle is 25 % larger; delta prediction shrinks the data 5-15 % but costs
  more to undo in numpy than it saves. Payloads written with any Blosc codec decode alike (the
  Blosc header names its codec): sets written with LZ4HC, or with the BloscLZ defaults that a lint
  change once left in by mistake (typesize 8), stay readable.

``s2c`` layout (all integers little-endian)::

    magic   4 bytes  b"S2C" + version (1)
    dtype   4 bytes  numpy dtype string, NUL padded (e.g. b"<u2\\0")
    ndim    1 byte   always 3: (C, H, W)
    shape   ndim x uint32
    length  uint64   byte length of the Blosc buffer that follows (so truncation is always detected)
    crc32   uint32   CRC-32 of the header before it and the buffer (checked before Blosc reads it)
    buffer  Blosc 1 buffer: typesize = itemsize, byte shuffle, LZ4 (any Blosc codec decodes)

Every decoding failure raises :class:`PayloadError` with the real cause.
"""

from __future__ import annotations

import struct
import zlib

import blosc
import numpy as np

PAYLOAD_EXTENSIONS = ("tif", "s2c")

S2C_MAGIC = b"S2C\x01"
S2C_CODEC = "lz4"
S2C_LEVEL = 9  # for LZ4, Blosc's block size: 5 is 1.5 % larger at the same speed
_HEAD = struct.Struct("<4s4sB3IQI")
_BLOSC_SIZES = struct.Struct("<III")  # bytes 4-15 of a Blosc 1 header: nbytes, blocksize, cbytes

# The loader parallelises over processes, one core each: Blosc's own threads would oversubscribe.
blosc.set_nthreads(1)


class PayloadError(ValueError):
    """An image payload is corrupt, truncated or not in the format its extension names."""


def decode(ext: str, data: bytes) -> np.ndarray:
    """Decode a payload stored under sample key ``ext`` into a (C, H, W) array of its stored dtype."""
    if ext == "tif":
        return decode_tif(data)
    if ext == "s2c":
        return decode_fast(data)
    raise PayloadError(f"unknown payload extension {ext!r}; expected one of {PAYLOAD_EXTENSIONS}")


def decode_tif(data: bytes) -> np.ndarray:
    """Read all bands of an in-memory GeoTIFF with rasterio (GDAL)."""
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError
    from rasterio.io import MemoryFile

    if not data:
        raise PayloadError("tif payload is empty")
    if data[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        raise PayloadError(f"tif payload is not a TIFF: it starts with {bytes(data[:8])!r}")
    try:
        with MemoryFile(bytes(data)) as memfile, memfile.open() as dataset:
            return dataset.read()
    except (RasterioError, CPLE_BaseError) as err:
        cause = err.__cause__ or err  # rasterio's read error only says "see previous exception"
        raise PayloadError(f"tif payload could not be decoded ({len(data)} bytes): {cause}") from err


def encode_fast(array: np.ndarray, level: int = S2C_LEVEL) -> bytes:
    """Encode a (C, H, W) array as an ``s2c`` payload (lossless; any fixed-size numeric dtype)."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"encode_fast expects a (C, H, W) array, got shape {array.shape}")
    if array.dtype.kind not in "uif":
        raise ValueError(f"encode_fast expects an integer or float array, got dtype {array.dtype}")
    if array.nbytes > blosc.MAX_BUFFERSIZE:
        raise ValueError(f"encode_fast: {array.nbytes} bytes is over Blosc's limit of {blosc.MAX_BUFFERSIZE}")
    little = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
    data = memoryview(little).cast("B")  # type: ignore[arg-type]  # numpy arrays are buffers
    body = blosc.compress(data, typesize=little.itemsize, clevel=level, shuffle=blosc.SHUFFLE, cname=S2C_CODEC)
    head = _HEAD.pack(S2C_MAGIC, little.dtype.str.encode("ascii"), 3, *array.shape, len(body), 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def decode_fast(data: bytes) -> np.ndarray:
    """Decode an ``s2c`` payload into a new writable (C, H, W) array in native byte order."""
    if not data:
        raise PayloadError("s2c payload is empty")
    if bytes(data[:4]) != S2C_MAGIC:
        raise PayloadError(f"not an s2c payload: it starts with {bytes(data[:4])!r}, expected {S2C_MAGIC!r}")
    if len(data) < _HEAD.size:
        raise PayloadError(f"s2c payload truncated: {len(data)} bytes, the header alone needs {_HEAD.size}")
    _, dtype_str, ndim, *shape, length, crc = _HEAD.unpack_from(data)
    if len(data) != _HEAD.size + length:
        raise PayloadError(f"s2c payload truncated or padded: header says {_HEAD.size + length} bytes, got {len(data)}")
    body = bytes(data[_HEAD.size :])
    if zlib.crc32(body, zlib.crc32(bytes(data[: _HEAD.size - 4]))) != crc:
        raise PayloadError(f"s2c payload is corrupt ({len(data)} bytes): CRC-32 mismatch")
    if ndim != 3:
        raise PayloadError(f"s2c payload header is corrupt: ndim {ndim}, expected 3")
    try:
        dtype = np.dtype(dtype_str.rstrip(b"\x00").decode("ascii"))
    except (TypeError, UnicodeDecodeError) as err:
        raise PayloadError(f"s2c payload header is corrupt: dtype {dtype_str!r}") from err
    out = np.empty(shape, dtype=dtype)
    nbytes, _, cbytes = _BLOSC_SIZES.unpack_from(body, 4) if len(body) >= 16 else (-1, 0, -1)
    if nbytes != out.nbytes or cbytes != len(body):  # Blosc writes nbytes into ``out``: never more
        raise PayloadError(
            f"s2c payload is corrupt: its Blosc buffer holds {nbytes} bytes in {cbytes}, "
            f"expected {out.nbytes} bytes (shape {tuple(shape)} {dtype}) in {len(body)}"
        )
    try:
        blosc.decompress_ptr(body, out.ctypes.data)
    except Exception as err:  # noqa: BLE001 - python-blosc raises RuntimeError/ValueError/TypeError
        raise PayloadError(f"s2c payload is corrupt ({len(data)} bytes): blosc: {err}") from err
    return out if dtype.isnative else out.astype(dtype.newbyteorder("="))


__all__ = ["PAYLOAD_EXTENSIONS", "PayloadError", "decode", "decode_fast", "decode_tif", "encode_fast"]
