"""The stream container: exact round trip, a compact header, and every kind of damage is a BitstreamError."""
import hashlib
import struct
import zlib

import numpy as np
import pytest

from cdlib.bitstream import (CODEC_TAGS, HASH_BYTES, LEGACY_MAGIC, MAGIC, MAX_PIXELS, MAX_SIDE, VERSION,
                             BitstreamError, bpp, codec_tag, hash_bytes, pack, peek_codec, register_codec_name,
                             same_model, unpack)
from cdlib.codecs.base import Codec

STRINGS = [b"first string", b"", b"\x00\x01\x02" * 50, bytes(range(256))]
MODEL = bytes.fromhex("0123456789abcdef")


def _stream(strings=STRINGS, **kw):
    args = dict(codec="demo", height=17, width=33, pad_h=3, pad_w=1, quality=0.25,
                cfg_hash=b"12345678")
    args.update(kw)
    return pack(args.pop("codec"), strings, **args)


def _rebuild_crc(data: bytes, header_size: int) -> bytes:
    """Recompute the CRC of a (tampered) stream so that only the tampering itself is wrong."""
    head, payload = data[: header_size - 4], data[header_size:]
    return head + struct.pack(">I", zlib.crc32(head + payload) & 0xFFFFFFFF) + payload


def _v(n: int) -> bytes:
    """Unsigned LEB128, written here independently of the library."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _forge(fields: bytes, flags: int, strings=(b"payload",), tag=None, first=MAGIC) -> bytes:
    """A stream built by hand from the documented layout, with a valid CRC (bypasses pack's checks)."""
    tag = codec_tag("demo") if tag is None else tag
    head = first + bytes([flags, tag]) + fields
    payload = b"".join(strings)
    return head + struct.pack(">I", zlib.crc32(head + payload) & 0xFFFFFFFF) + payload


def test_round_trip():
    data = _stream()
    header, strings = unpack(data)
    assert strings == STRINGS
    assert header.codec == "demo"
    assert header.cfg_hash == b"123" and len(header.cfg_hash) == HASH_BYTES
    assert same_model(header.cfg_hash, b"12345678") and not same_model(header.cfg_hash, b"12045678")
    assert (header.height, header.width, header.pad_h, header.pad_w) == (17, 33, 3, 1)
    assert header.quality == 0.25
    assert header.lengths == tuple(len(s) for s in STRINGS)
    assert header.size + sum(header.lengths) == len(data)
    assert data[:1] == MAGIC and data[0] == 0xD0 | VERSION
    assert peek_codec(data) == "demo"
    assert bpp(data, 17, 33) == 8 * len(data) / (17 * 33)
    # bytearray/memoryview are accepted; no strings at all is a valid stream too
    assert unpack(bytearray(data))[1] == STRINGS
    assert unpack(memoryview(data))[1] == STRINGS
    assert unpack(_stream(strings=[]))[1] == []


@pytest.mark.parametrize("kw", [
    dict(), dict(strings=[]), dict(strings=[b"x"]), dict(strings=[b"a", b"b", b"c"]), dict(strings=[b"s"] * 255),
    dict(height=64, width=64, pad_h=0, pad_w=0), dict(pad_h=0, pad_w=5), dict(cfg_hash=b"\0" * 8),
    dict(cfg_hash=b"\0\0\0" + b"12345"), dict(quality=3), dict(quality=-7), dict(quality=0.1),
    dict(quality=-2 ** 31), dict(quality=2 ** 31), dict(quality=1e300), dict(height=MAX_SIDE, width=MAX_PIXELS // MAX_SIDE),
])
def test_exact_round_trip_and_one_encoding(kw):
    """Every field comes back exactly, and re-packing a parsed stream gives the same bytes."""
    args = dict(codec="demo", strings=STRINGS, height=17, width=33, pad_h=3, pad_w=1, quality=0.25,
                cfg_hash=b"12345678")
    args.update(kw)
    data = pack(args.pop("codec"), args.pop("strings"), **args)
    header, strings = unpack(data)
    assert (header.height, header.width, header.pad_h, header.pad_w) == (args["height"], args["width"],
                                                                          args["pad_h"], args["pad_w"])
    assert header.quality == float(args["quality"]) and isinstance(header.quality, float)
    assert same_model(header.cfg_hash, args["cfg_hash"])
    assert header.cfg_hash == (b"" if args["cfg_hash"] == b"\0" * 8 else args["cfg_hash"][:HASH_BYTES])
    again = pack(header.codec, strings, header.height, header.width, header.pad_h, header.pad_w, header.quality,
                 header.cfg_hash)
    assert again == data


def test_header_is_compact():
    """The container costs a few bytes: 13 for a 64x64 learned stream, 9 for JPEG."""
    y, z = bytes(300), bytes(40)  # a mid-rate 64x64 hyperprior stream: y first, z last
    learned = {s: unpack(pack("hyperprior", [y, z], s, s, 0, 0, 2.0, MODEL))[0].size for s in (64, 256)}
    bai = unpack(pack("bai2022", [y * 10, z * 2], 256, 256, 0, 0, 3.0, MODEL))[0].size
    jpeg = {s: unpack(pack("jpeg", [y], s, s, 0, 0, 50.0))[0].size for s in (64, 256)}
    print(f"header bytes: learned 64x64 {learned[64]} ({8 * learned[64] / 64 ** 2:.4f} bpp), "
          f"256x256 {learned[256]}; bai2022 256x256 {bai}; jpeg 64x64 {jpeg[64]}, 256x256 {jpeg[256]}")
    assert learned == {64: 13, 256: 14} and bai == 14
    assert jpeg == {64: 9, 256: 10}
    # byte by byte: magic+version, flags, tag, 3-byte hash, side-1, quality, len(z), CRC
    data = pack("hyperprior", [y, z], 64, 64, 0, 0, 2.0, MODEL)
    assert data[:13 - 4] == MAGIC + bytes([0b0100_0101, codec_tag("hyperprior")]) + MODEL[:3] + bytes([63, 2, 40])
    # a padded non-square stream with a float quality spells out the optional fields
    data = pack("demo", [b"ab", b"c"], 17, 300, 3, 0, 0.5, b"\0" * 8)
    fields = _v(16) + _v(299) + _v(3) + _v(0) + struct.pack(">f", 0.5) + _v(1)
    assert data == _forge(fields, 0b0101_0010, [b"ab", b"c"])


def test_codec_tags_are_stable_and_distinct():
    # the tag is a pure function of the name, the same in every process (changing it breaks old streams)
    assert codec_tag("jpeg") == hashlib.blake2b(b"jpeg", digest_size=1).digest()[0] == 0x78
    assert codec_tag("hyperprior") == 0xA8
    builtin = ["jpeg", "webp", "jpeg2000", "avif", "hevc", "vvc", "factorized", "hyperprior", "bai2022"]
    assert len({codec_tag(n) for n in builtin + ["demo", "raw", "raw2", "bitplane"]}) == len(builtin) + 4
    assert register_codec_name("demo") == register_codec_name("demo") == codec_tag("demo")
    assert CODEC_TAGS[codec_tag("demo")] == "demo"


def test_tag_collision_refused_at_register_time():
    tag = register_codec_name("demo")
    clash = next(f"codec{i}" for i in range(100000) if codec_tag(f"codec{i}") == tag)
    with pytest.raises(ValueError, match="choose another name") as info:
        register_codec_name(clash)
    assert "demo" in str(info.value) and clash in str(info.value)
    with pytest.raises(ValueError, match="choose another name"):
        pack(clash, [b"x"], 4, 4)
    assert CODEC_TAGS[tag] == "demo"


def test_unknown_codec_tag_refused():
    register_codec_name("demo")
    free = next(t for t in range(256) if t not in CODEC_TAGS)
    data = _forge(_v(4) + _v(0), 0b0010_0100, tag=free)
    with pytest.raises(BitstreamError, match=f"codec tag 0x{free:02x} is not registered.*known codecs: .*demo"):
        unpack(data)


def test_same_model():
    assert same_model(MODEL[:HASH_BYTES], MODEL) and same_model(MODEL, MODEL)
    assert not same_model(MODEL[:HASH_BYTES], hash_bytes("other"))
    assert same_model(b"", b"\0" * 8) and not same_model(b"", MODEL) and not same_model(MODEL[:3], b"\0" * 8)
    # a hash that merely starts with zeros is still a model hash
    assert not same_model(b"", b"\0\0\0" + MODEL[3:]) and same_model(b"\0\0\0", b"\0\0\0" + MODEL[3:])
    with pytest.raises(ValueError, match="cfg_hash"):
        same_model(b"1234", MODEL)


def test_long_lengths_use_multibyte_varints():
    big = [bytes(300), bytes(70000), bytes(200)]
    assert unpack(_stream(strings=big))[1] == big


def test_hash_bytes():
    assert hash_bytes("00112233445566778899") == bytes.fromhex("0011223344556677")
    assert len(hash_bytes("not hex")) == 8
    assert hash_bytes("not hex") == hash_bytes("not hex") != hash_bytes("other")


@pytest.mark.parametrize("bad", [
    dict(codec=""), dict(codec="x" * 256), dict(codec="caf\u00e9"), dict(cfg_hash=b"short"), dict(height=0),
    dict(width=(1 << 16) + 1), dict(height=MAX_SIDE, width=MAX_SIDE), dict(height=2.5), dict(pad_h=-1),
    dict(pad_w=MAX_SIDE + 1), dict(strings=[b""] * 256), dict(quality=float("nan")), dict(quality=float("inf")),
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
    # random bytes behind a valid magic and version byte
    for n in (0, 10, 40, 400):
        for _ in range(20):
            with pytest.raises(BitstreamError):
                unpack(MAGIC + rng.bytes(n))


def test_every_truncation():
    for data in (_stream(strings=[b"abc", b"defgh"]), pack("hyperprior", [bytes(300), bytes(40)], 64, 64, 0, 0, 2.0,
                                                            MODEL)):
        for n in range(len(data)):
            with pytest.raises(BitstreamError):
                unpack(data[:n])


def test_sampled_truncations_of_a_long_stream():
    data = _stream()
    for n in list(range(0, 60)) + list(range(60, len(data), 37)) + [len(data) - 1]:
        with pytest.raises(BitstreamError):
            unpack(data[:n])


def test_trailing_bytes_and_concatenation():
    data = _stream()
    with pytest.raises(BitstreamError, match="checksum"):
        unpack(data + b"\x00")
    with pytest.raises(BitstreamError, match="truncated"):  # the message covers both directions
        unpack(data[:-1])
    with pytest.raises(BitstreamError, match="checksum"):
        unpack(data + data)
    with pytest.raises(BitstreamError, match="checksum"):
        unpack(data + _stream(strings=[b"x"]))
    empty = _stream(strings=[])
    with pytest.raises(BitstreamError, match="payload"):
        unpack(empty + b"\x00")


def test_magic_flipped():
    data = _stream()
    for bit in range(4, 8):
        bad = bytearray(data)
        bad[0] ^= 1 << bit
        with pytest.raises(BitstreamError, match="magic"):
            unpack(bytes(bad))


def test_version_bumped():
    data = bytearray(_stream())
    for v in (0, 1, VERSION + 1, 15):
        data[0] = 0xD0 | v
        with pytest.raises(BitstreamError, match="version"):
            unpack(bytes(data))


def test_version_1_container_refused_with_a_clear_message():
    # the start of a stream written by the old format: b"ICMB", version 1, name, 8-byte hash, ...
    old = LEGACY_MAGIC + bytes([1, 4]) + b"demo" + b"12345678" + struct.pack(">IIHHf", 17, 33, 3, 1, 0.25) + b"\x00"
    old += struct.pack(">I", zlib.crc32(old) & 0xFFFFFFFF)
    for data in (old, old[:4]):
        with pytest.raises(BitstreamError, match=r"version-1 cdlib container .*older cdlib.*re-encode"):
            unpack(data)


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


@pytest.mark.parametrize("kw", [dict(), dict(height=64, width=64, pad_h=0, pad_w=0, quality=2, strings=STRINGS[:2]),
                                dict(cfg_hash=b"\0" * 8, quality=-3)])
def test_header_bit_flips(kw):
    """Any single flipped bit in the header is caught (by a field check or by the CRC)."""
    data = _stream(**kw)
    header, _ = unpack(data)
    for pos in range(header.size):
        for bit in range(8):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            with pytest.raises(BitstreamError):
                unpack(bytes(bad))


def test_header_length_tampering():
    strings = [b"abcdef", b"ghij"]
    data = _stream(strings=strings, cfg_hash=b"\0" * 8)
    header, _ = unpack(data)
    # the only stored length is the last string's, right before the CRC; the first string is the rest
    n_pos = header.size - 5
    assert data[n_pos] == 4 and data[1] >> 5 & 3 == 2
    for delta in (-1, +1):
        bad = bytearray(data)
        bad[n_pos] += delta
        with pytest.raises(BitstreamError, match="checksum"):
            unpack(bytes(bad))
    # with the CRC recomputed, a length past the payload is still caught
    for length in (11, 127):
        bad = bytearray(data)
        bad[n_pos] = length
        with pytest.raises(BitstreamError, match="truncated stream: payload has 10 bytes"):
            unpack(_rebuild_crc(bytes(bad), header.size))
    # with the CRC recomputed, a boundary moved inside the payload is a well-formed stream (the CRC is
    # what protects the split; a codec's decoder then sees other strings)
    bad = bytearray(data)
    bad[n_pos] = 5
    assert unpack(_rebuild_crc(bytes(bad), header.size))[1] == [b"abcde", b"fghij"]
    # a non-minimal varint is refused even with a valid CRC
    bad = data[:n_pos] + b"\x84\x00" + data[n_pos + 1:]
    with pytest.raises(BitstreamError, match="minimally"):
        unpack(_rebuild_crc(bad, header.size + 1))
    # fewer/more strings announced (N bits of the flags byte), with or without the escape varint
    for n in (0, 1, 3):
        bad = bytearray(data)
        bad[1] = bad[1] & ~0x60 | n << 5
        with pytest.raises(BitstreamError):
            unpack(bytes(bad))
    # a never-ending varint
    bad = bytearray(data[:n_pos]) + b"\xff" * 8
    with pytest.raises(BitstreamError):
        unpack(bytes(bad))
    # a model hash announced that runs past the header
    bad = bytearray(data[:4])
    bad[1] |= 0x01
    with pytest.raises(BitstreamError, match="inside the model hash"):
        unpack(bytes(bad))


def test_string_count_escape_checked():
    data = _stream(strings=[b"s"] * 255)
    assert data[1] >> 5 & 3 == 3 and len(unpack(data)[1]) == 255
    for extra in (253, 300):
        bad = _forge(_v(4) + _v(0) + _v(extra) + _v(1) * (extra + 2), 0b0110_0100, [b"s"] * (extra + 3))
        with pytest.raises(BitstreamError, match="strings announced"):
            unpack(bad)


@pytest.mark.parametrize("fields,flags,match", [
    (_v(MAX_SIDE) + _v(0), 0b0010_0100, "size"),                      # height above MAX_SIDE
    (_v(0) + _v(MAX_SIDE) + _v(0), 0b0010_0000, "size"),                     # width above MAX_SIDE
    (_v(MAX_SIDE - 1) + _v(0), 0b0010_0100, "MAX_PIXELS"),            # 65536x65536 (4 Gpixel)
    (_v(MAX_SIDE - 1) + _v(MAX_PIXELS // MAX_SIDE) + _v(0), 0b0010_0000, "MAX_PIXELS"),
    (_v(3) + _v(MAX_SIDE + 1) + _v(0) + _v(0), 0b0010_0110, "padding"),
    (_v(3) + _v(2 ** 31), 0b0010_0100, "quality"),                     # integer quality out of range
])
def test_forged_sizes_refused_even_with_valid_crc(fields, flags, match):
    register_codec_name("demo")
    with pytest.raises(BitstreamError, match=match):
        unpack(_forge(fields, flags))


def test_largest_legal_sizes_accepted():
    register_codec_name("demo")
    for fields, flags in [(_v(MAX_SIDE - 1) + _v(MAX_PIXELS // MAX_SIDE - 1) + _v(0), 0b0010_0000),
                          (_v(4095) + _v(0), 0b0010_0100)]:
        header = unpack(_forge(fields, flags))[0]
        assert header.height * header.width <= MAX_PIXELS


@pytest.mark.parametrize("fields,flags,match", [
    (_v(4) + _v(0), 0b1010_0100, "reserved"),                        # reserved flag bit
    (_v(4) + _v(4) + _v(0), 0b0010_0000, "square"),                   # square image not marked square
    (_v(4) + _v(0) + _v(0) + _v(0), 0b0010_0110, "padding"),          # padding flag, zero pads
    (_v(4) + struct.pack(">f", 2.0), 0b0011_0100, "quality"),         # integral quality stored as float32
    (_v(4) + struct.pack(">d", 0.5), 0b0011_1100, "quality"),         # float32-exact quality as float64
    (_v(4) + struct.pack(">f", float("nan")), 0b0011_0100, "quality"),
])
def test_non_canonical_fields_refused_even_with_valid_crc(fields, flags, match):
    register_codec_name("demo")
    with pytest.raises(BitstreamError, match=match):
        unpack(_forge(fields, flags))
    # negative integer qualities are stored as -1-q, so every varint is a distinct valid value
    assert unpack(_forge(_v(4) + _v(0), 0b0010_1100))[0].quality == -1.0


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
    stored = unpack(data)[0].cfg_hash
    assert stored == hash_bytes("model-a")[:HASH_BYTES] and same_model(stored, _Raw().cfg_hash())


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
