"""The stream container: exact round trip, and every kind of damage is a BitstreamError."""
import struct
import zlib

import numpy as np
import pytest

from cdlib.bitstream import (MAGIC, VERSION, BitstreamError, bpp, hash_bytes, pack, peek_codec,
                             unpack)
from cdlib.codecs.base import Codec

STRINGS = [b"first string", b"", b"\x00\x01\x02" * 50, bytes(range(256))]


def _stream(strings=STRINGS, **kw):
    args = dict(codec="demo", height=17, width=33, pad_h=3, pad_w=1, quality=0.25,
                cfg_hash=b"12345678")
    args.update(kw)
    return pack(args.pop("codec"), strings, **args)


def _rebuild_crc(data: bytes, header_size: int) -> bytes:
    """Recompute the CRC of a (tampered) stream so that only the tampering itself is wrong."""
    head, payload = data[: header_size - 4], data[header_size:]
    return head + struct.pack(">I", zlib.crc32(head + payload) & 0xFFFFFFFF) + payload


def test_round_trip():
    data = _stream()
    header, strings = unpack(data)
    assert strings == STRINGS
    assert (header.codec, header.cfg_hash) == ("demo", b"12345678")
    assert (header.height, header.width, header.pad_h, header.pad_w) == (17, 33, 3, 1)
    assert header.quality == pytest.approx(0.25)
    assert header.lengths == tuple(len(s) for s in STRINGS)
    assert header.size + sum(header.lengths) == len(data)
    assert data[:4] == MAGIC and data[4] == VERSION
    assert peek_codec(data) == "demo"
    assert bpp(data, 17, 33) == 8 * len(data) / (17 * 33)
    # bytearray/memoryview are accepted; no strings at all is a valid stream too
    assert unpack(bytearray(data))[1] == STRINGS
    assert unpack(memoryview(data))[1] == STRINGS
    assert unpack(_stream(strings=[]))[1] == []


def test_long_lengths_use_multibyte_varints():
    big = [bytes(300), bytes(70000)]
    assert unpack(_stream(strings=big))[1] == big


def test_hash_bytes():
    assert hash_bytes("00112233445566778899") == bytes.fromhex("0011223344556677")
    assert len(hash_bytes("not hex")) == 8
    assert hash_bytes("not hex") == hash_bytes("not hex") != hash_bytes("other")


@pytest.mark.parametrize("bad", [
    dict(codec=""), dict(codec="x" * 256), dict(cfg_hash=b"short"), dict(height=0),
    dict(width=(1 << 16) + 1), dict(strings=[b""] * 256),
])
def test_pack_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        _stream(**bad)


@pytest.mark.parametrize("data", [b"", "ICMB text", None, 42])
def test_empty_or_not_bytes(data):
    with pytest.raises(BitstreamError):
        unpack(data)


def test_random_bytes():
    rng = np.random.default_rng(0)
    for n in (1, 5, 6, 30, 200, 5000):
        for _ in range(20):
            with pytest.raises(BitstreamError):
                unpack(rng.bytes(n))
    # random bytes behind a valid magic and version
    for n in (0, 10, 40, 400):
        for _ in range(20):
            with pytest.raises(BitstreamError):
                unpack(MAGIC + bytes([VERSION]) + rng.bytes(n))


def test_every_truncation():
    data = _stream(strings=[b"abc", b"defgh"])
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            unpack(data[:n])


def test_sampled_truncations_of_a_long_stream():
    data = _stream()
    for n in list(range(0, 60)) + list(range(60, len(data), 37)) + [len(data) - 1]:
        with pytest.raises(BitstreamError):
            unpack(data[:n])


def test_trailing_bytes():
    with pytest.raises(BitstreamError, match="payload"):
        unpack(_stream() + b"\x00")


def test_magic_flipped():
    data = _stream()
    for i in range(4):
        bad = bytearray(data)
        bad[i] ^= 0x20
        with pytest.raises(BitstreamError, match="magic"):
            unpack(bytes(bad))


def test_version_bumped():
    data = bytearray(_stream())
    for v in (0, VERSION + 1, 255):
        data[4] = v
        with pytest.raises(BitstreamError, match="version"):
            unpack(bytes(data))


def test_payload_bit_flips():
    data = _stream()
    header, _ = unpack(data)
    rng = np.random.default_rng(1)
    positions = rng.choice(np.arange(header.size, len(data)), size=64, replace=False)
    for pos in positions:
        for bit in (0, 7):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            with pytest.raises(BitstreamError, match="checksum"):
                unpack(bytes(bad))


def test_header_bit_flips():
    """Any single flipped bit in the header is caught (by a field check or by the CRC)."""
    data = _stream()
    header, _ = unpack(data)
    for pos in range(header.size):
        for bit in range(8):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            with pytest.raises(BitstreamError):
                unpack(bytes(bad))


def test_header_length_tampering():
    strings = [b"abcdef", b"ghij"]
    data = _stream(strings=strings)
    header, _ = unpack(data)
    # offset of the n_strings byte: magic, version, name_len, name, fixed fields
    n_pos = 6 + len("demo") + 8 + 4 + 4 + 2 + 2 + 4
    assert data[n_pos] == 2 and data[n_pos + 1] == 6 and data[n_pos + 2] == 4
    for delta in (-1, +1):
        bad = bytearray(data)
        bad[n_pos + 1] += delta  # first length field
        with pytest.raises(BitstreamError):
            unpack(bytes(bad))
        # even with the CRC recomputed, the lengths no longer add up to the payload
        with pytest.raises(BitstreamError, match="payload"):
            unpack(_rebuild_crc(bytes(bad), header.size))
    # moving bytes from one string to the other keeps the sum: only the CRC can tell
    bad = bytearray(data)
    bad[n_pos + 1] -= 1
    bad[n_pos + 2] += 1
    with pytest.raises(BitstreamError, match="checksum"):
        unpack(bytes(bad))
    # fewer/more strings announced
    for n in (0, 1, 3, 255):
        bad = bytearray(data)
        bad[n_pos] = n
        with pytest.raises(BitstreamError):
            unpack(bytes(bad))
    # a never-ending varint
    bad = bytearray(data[: n_pos + 1]) + b"\xff" * 8
    with pytest.raises(BitstreamError):
        unpack(bytes(bad))
    # a name length that runs past the header
    bad = bytearray(data)
    bad[5] = 200
    with pytest.raises(BitstreamError):
        unpack(bytes(bad))


def test_size_fields_checked_even_with_valid_crc():
    data = _stream()
    header, _ = unpack(data)
    h_pos = 6 + len("demo") + 8
    for value in (0, (1 << 16) + 1):
        bad = bytearray(data)
        bad[h_pos:h_pos + 4] = struct.pack(">I", value)
        with pytest.raises(BitstreamError, match="size"):
            unpack(_rebuild_crc(bytes(bad), header.size))


# --------------------------------------------------------------------------- codec-level checks


class _Raw(Codec):
    """Stores the pixels as they are; its 'model' is identified by a nonzero cfg hash."""

    name = "raw"
    label = "raw"
    qualities = (0,)

    def __init__(self, model_id: str = "model-a"):
        self.model_id = model_id

    def cfg_hash(self, quality=None):
        return hash_bytes(self.model_id)

    def _encode(self, image, quality):
        return [image.tobytes()], 0, 0

    def _decode(self, strings, header):
        return np.frombuffer(strings[0], np.uint8).reshape(header.height, header.width, 3)


class _OtherRaw(_Raw):
    name = "raw2"


def _img(h=5, w=7):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_codec_round_trip_and_cfg_hash_in_header():
    img = _img()
    data = _Raw().encode(img)
    np.testing.assert_array_equal(_Raw().decode(data), img)
    assert unpack(data)[0].cfg_hash == hash_bytes("model-a") != b"\0" * 8


def test_stream_of_another_codec_refused():
    data = _OtherRaw().encode(_img())
    with pytest.raises(BitstreamError, match="raw2"):
        _Raw().decode(data)


def test_cfg_hash_mismatch_refused():
    data = _Raw("model-a").encode(_img())
    with pytest.raises(BitstreamError, match="model"):
        _Raw("model-b").decode(data)


def test_decoder_exceptions_become_bitstream_errors():
    img = _img()
    header, strings = unpack(_Raw().encode(img))
    short = pack("raw", [strings[0][:-3]], header.height, header.width, cfg_hash=header.cfg_hash)
    with pytest.raises(BitstreamError, match="could not be decoded"):
        _Raw().decode(short)


def test_decoded_shape_must_match_header():
    img = _img()
    header, strings = unpack(_Raw().encode(img))
    lying = pack("raw", strings, header.height, header.width, pad_h=1, cfg_hash=header.cfg_hash)
    with pytest.raises(BitstreamError):
        _Raw().decode(lying)
