"""Payload codecs: s2c round trips bit-exactly and is smaller than the LZW GeoTIFF; bad bytes raise PayloadError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import rasterio

from satclip.data.payload import PAYLOAD_EXTENSIONS, PayloadError, decode, encode_fast


@pytest.fixture(scope="module")
def tif_files(s2_sample):
    return sorted((s2_sample / "images").glob("*.tif"))


@pytest.fixture(scope="module")
def tif_bytes(tif_files):
    return tif_files[0].read_bytes()


def test_extensions():
    assert PAYLOAD_EXTENSIONS == ("tif", "s2c")


def test_s2c_round_trip_bit_exact_and_smaller_than_tif(tif_files):
    assert len(tif_files) == 20
    for path in tif_files:
        with rasterio.open(path) as dataset:
            expected = dataset.read()
        data = path.read_bytes()
        from_tif = decode("tif", data)
        blob = encode_fast(from_tif)
        from_s2c = decode("s2c", blob)
        assert from_tif.dtype == from_s2c.dtype == np.uint16
        assert from_s2c.shape == (12, 256, 256)
        np.testing.assert_array_equal(from_tif, expected)
        np.testing.assert_array_equal(from_s2c, expected)
        assert from_s2c.flags.writeable
        assert len(blob) <= len(data), path.name


def test_s2c_is_blosc_lz4_with_a_byte_shuffle_of_the_values(tif_bytes):
    """The Blosc buffer's header (after the 33-byte s2c header) names what encoded it: the LZ4 format,
    the byte shuffle, and the 2-byte values as its typesize (a lint change once left Blosc's BloscLZ
    defaults, typesize 8, in by mistake: 1.3x the size, 1.8x the decoding time)."""
    import blosc

    blob = encode_fast(decode("tif", tif_bytes))
    body = blob[33:]
    flags, typesize = body[2], body[3]
    assert blosc.get_clib(body) == "LZ4" and flags >> 5 == 1  # Blosc's compressor format code 1: LZ4 / LZ4HC
    assert flags & 0x1 and not flags & 0x4  # byte shuffle, no bit shuffle
    assert typesize == 2


def test_bytes_like_inputs(tif_bytes):
    expected = decode("tif", tif_bytes)
    blob = encode_fast(expected)
    np.testing.assert_array_equal(decode("tif", memoryview(tif_bytes)), expected)
    np.testing.assert_array_equal(decode("s2c", bytearray(blob)), expected)
    np.testing.assert_array_equal(decode("s2c", memoryview(blob)), expected)


@pytest.mark.parametrize("dtype", ["uint8", "int16", ">u2", "float32", "uint32"])
def test_s2c_other_dtypes(dtype):
    array = (np.arange(3 * 5 * 7) * 37 % 251).astype(dtype).reshape(3, 5, 7)
    out = decode("s2c", encode_fast(array))
    assert out.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(out, array)


def test_encode_fast_rejects_non_chw():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        encode_fast(np.zeros((4, 4), np.uint16))


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _with_crc(blob: bytes) -> bytes:
    """A payload with a fixed-up CRC: reaches the checks behind it."""
    head, body = blob[:29], blob[33:]
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def test_s2c_bad_bytes_raise_payload_error(tif_bytes):
    blob = encode_fast(decode("tif", tif_bytes))
    cases = {
        "empty": (b"", "empty"),
        "garbage": (b"hello world" * 10, "not an s2c payload"),
        "a tif": (tif_bytes, "not an s2c payload"),
        "header only": (blob[:10], "truncated"),
        "truncated half": (blob[: len(blob) // 2], "truncated"),
        "last byte missing": (blob[:-1], "truncated"),
        "trailing bytes": (blob + b"\x00", "padded"),
        "flipped byte": (_flip(blob, len(blob) // 2), "corrupt"),
        "flipped header byte": (_flip(blob, 6), "CRC-32 mismatch"),
        "bad dtype": (_with_crc(blob[:4] + b"?x\x00\x00" + blob[8:]), "dtype"),
        "shape too small": (_with_crc(blob[:9] + struct.pack("<3I", 12, 256, 255) + blob[21:]), "Blosc buffer holds 1572864"),
        "blosc header garbage": (_with_crc(blob[:33] + b"\x00" * 16 + blob[49:]), "Blosc buffer holds 0 bytes in 0"),
        "blosc body garbage": (_with_crc(blob[:1000] + b"\x00" * 5000 + blob[6000:]), "blosc:"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(PayloadError, match=message):
            decode("s2c", data)
            pytest.fail(f"no error for {name}")


def test_tif_bad_bytes_raise_payload_error(tif_bytes):
    blob = encode_fast(decode("tif", tif_bytes))
    cases = {
        "empty": (b"", "empty"),
        "garbage": (b"hello world" * 10, "not a TIFF"),
        "an s2c payload": (blob, "not a TIFF"),
        "header only": (tif_bytes[:200], "could not be decoded.*TIFFReadDirectory"),
        "truncated": (tif_bytes[:-100], "could not be decoded.*IReadBlock"),
        "garbled tile": (tif_bytes[:500_000] + b"\xff" * 100 + tif_bytes[500_100:], "could not be decoded"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(PayloadError, match=message):
            decode("tif", data)
            pytest.fail(f"no error for {name}")


def test_unknown_extension():
    with pytest.raises(PayloadError, match="unknown payload extension 'png'"):
        decode("png", b"x")
    assert issubclass(PayloadError, ValueError)
