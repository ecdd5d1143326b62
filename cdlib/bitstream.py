"""A small versioned container around every codec's payload.

Layout (big-endian)::

    magic      4 bytes  b"ICMB"
    version    1 byte
    name_len   1 byte, then the codec name (ASCII)
    cfg_hash   8 bytes  identifies the model/checkpoint (zeros for classical codecs)
    height     4 bytes  original image height
    width      4 bytes  original image width
    pad_h      2 bytes  rows added at the bottom before coding
    pad_w      2 bytes  columns added at the right
    quality    4 bytes  float32, the quality/QP the stream was made with (informative)
    n_strings  1 byte, then n_strings varint lengths
    crc32      4 bytes  over everything above and the payload
    payload    the strings, concatenated

bpp is always ``8 * len(stream) / (height * width)``; :func:`header_size` lets
the caller report the container overhead apart from the payload.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"ICMB"
VERSION = 1
MAX_SIDE = 1 << 16
_FIXED = struct.Struct(">8sIIHHf")


class BitstreamError(ValueError):
    """Raised for any stream that cannot be decoded faithfully (corrupt, truncated, wrong model)."""


@dataclass(frozen=True)
class Header:
    codec: str
    cfg_hash: bytes
    height: int
    width: int
    pad_h: int
    pad_w: int
    quality: float
    lengths: tuple[int, ...]
    size: int  # header bytes (everything before the payload)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    for _ in range(5):
        if pos >= len(buf):
            raise BitstreamError("truncated stream: header ends inside a length field")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos
    raise BitstreamError("corrupt stream: length field too long")


def hash_bytes(text: str) -> bytes:
    """8-byte identifier from a hex digest or any string."""
    try:
        raw = bytes.fromhex(text)
        if len(raw) >= 8:
            return raw[:8]
    except ValueError:
        pass
    import hashlib

    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def pack(codec: str, strings: list[bytes], height: int, width: int, pad_h: int = 0, pad_w: int = 0,
         quality: float = 0.0, cfg_hash: bytes = b"\0" * 8) -> bytes:
    name = codec.encode("ascii")
    if not 0 < len(name) < 256:
        raise ValueError("codec name must be 1..255 ASCII characters")
    if len(cfg_hash) != 8:
        raise ValueError("cfg_hash must be 8 bytes")
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ValueError(f"image size {height}x{width} out of range 1..{MAX_SIDE}")
    if len(strings) > 255:
        raise ValueError("at most 255 payload strings")
    head = (MAGIC + bytes([VERSION, len(name)]) + name
            + _FIXED.pack(cfg_hash, height, width, pad_h, pad_w, float(quality))
            + bytes([len(strings)]) + b"".join(_varint(len(s)) for s in strings))
    payload = b"".join(strings)
    crc = zlib.crc32(head + payload) & 0xFFFFFFFF
    return head + struct.pack(">I", crc) + payload


def unpack(data: bytes) -> tuple[Header, list[bytes]]:
    """Parse and verify a stream; raise :class:`BitstreamError` on any inconsistency."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) == 0:
        raise BitstreamError("empty stream")
    if len(data) < 6 or data[:4] != MAGIC:
        raise BitstreamError("not a cdlib bitstream (bad magic bytes)")
    if data[4] != VERSION:
        raise BitstreamError(f"unsupported bitstream version {data[4]} (this cdlib reads version {VERSION})")
    name_len = data[5]
    pos = 6 + name_len
    if len(data) < pos + _FIXED.size + 1:
        raise BitstreamError("truncated stream: header incomplete")
    try:
        codec = data[6:pos].decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("corrupt stream: codec name is not ASCII") from None
    cfg_hash, height, width, pad_h, pad_w, quality = _FIXED.unpack_from(data, pos)
    pos += _FIXED.size
    n = data[pos]
    pos += 1
    lengths = []
    for _ in range(n):
        ln, pos = _read_varint(data, pos)
        lengths.append(ln)
    if len(data) < pos + 4:
        raise BitstreamError("truncated stream: checksum missing")
    (crc,) = struct.unpack_from(">I", data, pos)
    head, payload = data[:pos], data[pos + 4:]
    if sum(lengths) != len(payload):
        raise BitstreamError(f"truncated or padded stream: payload has {len(payload)} bytes, header says {sum(lengths)}")
    if zlib.crc32(head + payload) & 0xFFFFFFFF != crc:
        raise BitstreamError("checksum mismatch: the stream is corrupted")
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise BitstreamError(f"corrupt stream: image size {height}x{width}")
    strings, off = [], 0
    for ln in lengths:
        strings.append(payload[off:off + ln])
        off += ln
    return Header(codec, cfg_hash, height, width, pad_h, pad_w, quality, tuple(lengths), pos + 4), strings


def peek_codec(data: bytes) -> str:
    """The codec name of a stream (verifies the whole stream first)."""
    return unpack(data)[0].codec


def bpp(data: bytes, height: int, width: int) -> float:
    return 8.0 * len(data) / (height * width)
