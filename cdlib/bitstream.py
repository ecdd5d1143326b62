"""A small versioned container around every codec's payload (format version 2).

Layout (varints are unsigned LEB128: 7 bits a byte, low bits first, no redundant ``0x80 0x00`` tails)::

    byte 0     0xD0 | version            0xD2 for this format (version 1 started with b"ICMB")
    byte 1     flags   bit 0    H  a short model hash follows
                       bit 1    P  padding follows (at least one pad is nonzero)
                       bit 2    S  square image: the width field is left out (width == height)
                       bits 3-4 Q  quality: 0 integer q >= 0, 1 integer q < 0, 2 float32, 3 float64
                       bits 5-6 N  number of strings 0, 1, 2; 3: a varint n - 3 follows
                       bit 7       reserved, must be 0
    byte 2     codec tag                 first byte of blake2b(name, digest_size=1), see register_codec_name
    [H]        model hash                HASH_BYTES (3) bytes: the first bytes of the codec's 8-byte cfg hash
               height - 1                varint
    [not S]    width - 1                 varint
    [P]        pad_h, pad_w              varints: rows added at the bottom, columns at the right
               quality                   Q=0: varint q; Q=1: varint -1-q; Q=2: float32; Q=3: float64 (big-endian)
    [N=3]      n - 3                     varint
               lengths of strings 2..n   varints; string 1 is the rest of the payload
               crc32                     4 bytes, big-endian, over every byte above and the payload
    payload    the strings, concatenated

The first string is the one left without a length: learned codecs put the large ``y`` string first and
the small hyperprior ``z`` string last, so the stored length is usually one byte.  A single-image
learned stream at 64x64 (two strings, integer quality, model hash, no padding) has a 13-byte header,
14 at 256x256; a JPEG stream has 9 (64x64) or 10 (256x256).  The payload's exact length, and so
the first string's, is protected by the CRC: truncated, extended or concatenated streams fail it.

Every field has one encoding (pack(unpack(s)) == s): flags whose field would be redundant (padding
all zero, a non-square image marked square, an integral quality stored as a float) are refused.

``Header.cfg_hash`` is the stored short hash, ``b""`` when the stream names no model (classical
codecs, whose cfg hash is eight zero bytes).  Compare it with a codec's 8-byte hash through
:func:`same_model`.  bpp is always ``8 * len(stream) / (height * width)``; ``Header.size`` (the bytes
before the payload, CRC included) lets a caller report the container overhead apart.
"""
from __future__ import annotations

import hashlib
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

VERSION = 2
_MAGIC_HIGH = 0xD0
MAGIC = bytes([_MAGIC_HIGH | VERSION])   # the first byte of every stream of this format
LEGACY_MAGIC = b"ICMB"                   # version-1 containers (cdlib before the compact format)
HASH_BYTES = 3
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28
MAX_STRINGS = 255

_H, _P, _S = 0x01, 0x02, 0x04
_Q_SHIFT, _N_SHIFT = 3, 5
_RESERVED = 0x80
_Q_POS, _Q_NEG, _Q_F32, _Q_F64 = range(4)
_INT_LIMIT = 1 << 31                     # integral qualities in [-2**31, 2**31) are stored as varints
_F32, _F64, _CRC = struct.Struct(">f"), struct.Struct(">d"), struct.Struct(">I")

CODEC_TAGS: dict[int, str] = {}          # tag -> codec name, filled by register_codec_name


class BitstreamError(ValueError):
    """Raised for any stream that cannot be decoded faithfully (corrupt, truncated, wrong model)."""


@dataclass(frozen=True)
class Header:
    codec: str
    cfg_hash: bytes  # the stored short model hash (HASH_BYTES bytes), b"" when the stream names no model
    height: int
    width: int
    pad_h: int
    pad_w: int
    quality: float
    lengths: tuple[int, ...]
    size: int  # header bytes (everything before the payload, CRC included)


# --------------------------------------------------------------------------- codec tags


def _check_name(name) -> bytes:
    if not isinstance(name, str):
        raise ValueError(f"codec name must be a string, got {type(name).__name__}")
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"codec name {name!r} must be ASCII") from None
    if not 0 < len(raw) < 256:
        raise ValueError("codec name must be 1..255 ASCII characters")
    return raw


def codec_tag(name: str) -> int:
    """The 1-byte tag a stream stores for codec ``name`` (a pure function of the name)."""
    return hashlib.blake2b(_check_name(name), digest_size=1).digest()[0]


def register_codec_name(name: str) -> int:
    """Reserve the tag of codec ``name`` so streams can name it; return the tag.

    Idempotent for the same name.  Raise ValueError if another name already holds the tag: the tag
    is derived from the name, so the codec's author has to choose another name.
    """
    tag = codec_tag(name)
    holder = CODEC_TAGS.setdefault(tag, name)
    if holder != name:
        raise ValueError(f"codec name {name!r} has the same stream tag 0x{tag:02x} as the registered codec "
                         f"{holder!r}; choose another name for the new codec")
    return tag


# --------------------------------------------------------------------------- helpers


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


def _read_varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    n = shift = 0
    for i in range(5):
        if pos >= len(buf):
            raise BitstreamError(f"truncated stream: header ends inside the {what} field")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if b == 0 and i:
                raise BitstreamError(f"corrupt stream: {what} field is not minimally encoded")
            return n, pos
    raise BitstreamError(f"corrupt stream: {what} field too long")


def hash_bytes(text: str) -> bytes:
    """8-byte identifier from a hex digest or any string."""
    try:
        raw = bytes.fromhex(text)
        if len(raw) >= 8:
            return raw[:8]
    except ValueError:
        pass
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def _short_hash(h) -> bytes:
    """The stored form of a model hash: b"" (no model) or HASH_BYTES bytes."""
    h = bytes(h)
    if len(h) == 8:
        return h[:HASH_BYTES] if any(h) else b""
    if len(h) in (0, HASH_BYTES):
        return h
    raise ValueError(f"cfg_hash must be 8 bytes (or a stored {HASH_BYTES}-byte hash, or b''), got {len(h)}")


def same_model(header_hash: bytes, full_hash: bytes) -> bool:
    """Whether a stream's stored hash (``Header.cfg_hash``) names the model with 8-byte hash ``full_hash``.

    Eight zero bytes (a classical codec) match only a stream without a model hash.  Either argument may
    also be given in stored form (b"" or HASH_BYTES bytes).
    """
    return _short_hash(header_hash) == _short_hash(full_hash)


def _quality_field(q: float) -> tuple[int, bytes]:
    if q.is_integer() and -_INT_LIMIT <= q < _INT_LIMIT:
        return (_Q_POS, _varint(int(q))) if q >= 0 else (_Q_NEG, _varint(-1 - int(q)))
    try:
        f32 = _F32.pack(q)
    except OverflowError:  # beyond float32's range
        f32 = None
    if f32 is not None and _F32.unpack(f32)[0] == q:
        return _Q_F32, f32
    return _Q_F64, _F64.pack(q)


def _check_size(height, width, pad_h, pad_w, err):
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise err(f"image size {height}x{width} out of range: each side must be 1..{MAX_SIDE}")
    if height * width > MAX_PIXELS:
        raise err(f"image size {height}x{width} has {height * width} pixels, above the cap of "
                  f"MAX_PIXELS = {MAX_PIXELS}")
    if not (0 <= pad_h <= MAX_SIDE and 0 <= pad_w <= MAX_SIDE):
        raise err(f"padding {pad_h}x{pad_w} out of range 0..{MAX_SIDE}")


# --------------------------------------------------------------------------- pack / unpack


def pack(codec: str, strings: list[bytes], height: int, width: int, pad_h: int = 0, pad_w: int = 0,
         quality: float = 0.0, cfg_hash: bytes = b"\0" * 8) -> bytes:
    """Wrap payload ``strings`` in a container; registers ``codec``'s tag (ValueError on a tag clash).

    ``cfg_hash`` is the codec's 8-byte model hash (eight zeros: no model); a stored hash taken from
    a :class:`Header` (b"" or HASH_BYTES bytes) is accepted too, so a stream can be re-packed.
    """
    tag = register_codec_name(codec)
    short = _short_hash(cfg_hash)
    dims = (height, width, pad_h, pad_w)
    if any(int(v) != v for v in dims):
        raise ValueError(f"image size and padding must be integers, got {dims}")
    height, width, pad_h, pad_w = (int(v) for v in dims)
    _check_size(height, width, pad_h, pad_w, ValueError)
    strings = [bytes(s) for s in strings]
    n = len(strings)
    if n > MAX_STRINGS:
        raise ValueError(f"at most {MAX_STRINGS} payload strings")
    q = float(quality)
    if not math.isfinite(q):
        raise ValueError(f"quality must be a finite number, got {quality!r}")
    q_kind, q_field = _quality_field(q)
    flags = ((_H if short else 0) | (_P if pad_h or pad_w else 0) | (_S if height == width else 0)
             | q_kind << _Q_SHIFT | min(n, 3) << _N_SHIFT)
    head = bytearray(MAGIC + bytes([flags, tag]) + short + _varint(height - 1))
    if height != width:
        head += _varint(width - 1)
    if pad_h or pad_w:
        head += _varint(pad_h) + _varint(pad_w)
    head += q_field
    if n >= 3:
        head += _varint(n - 3)
    for s in strings[1:]:
        head += _varint(len(s))
    payload = b"".join(strings)
    crc = zlib.crc32(payload, zlib.crc32(head)) & 0xFFFFFFFF
    return bytes(head) + _CRC.pack(crc) + payload


def unpack(data: bytes) -> tuple[Header, list[bytes]]:
    """Parse and verify a stream; raise :class:`BitstreamError` on any inconsistency."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) == 0:
        raise BitstreamError("empty stream")
    if data[:4] == LEGACY_MAGIC:
        raise BitstreamError("this is a version-1 cdlib container (it starts with b'ICMB'), written by an older "
                             f"cdlib; this cdlib reads version {VERSION} only: re-encode the image")
    if data[0] & 0xF0 != _MAGIC_HIGH:
        raise BitstreamError(f"not a cdlib bitstream (bad magic byte 0x{data[0]:02x})")
    if data[0] & 0x0F != VERSION:
        raise BitstreamError(f"unsupported bitstream version {data[0] & 0x0F} (this cdlib reads version {VERSION})")
    if len(data) < 3:
        raise BitstreamError("truncated stream: header incomplete")
    flags, tag = data[1], data[2]
    if flags & _RESERVED:
        raise BitstreamError(f"corrupt stream: reserved flag bits set (flags 0x{flags:02x})")
    pos = 3
    cfg_hash = b""
    if flags & _H:
        cfg_hash, pos = data[pos:pos + HASH_BYTES], pos + HASH_BYTES
        if len(cfg_hash) < HASH_BYTES:
            raise BitstreamError("truncated stream: header ends inside the model hash")
    height, pos = _read_varint(data, pos, "height")
    height += 1
    if flags & _S:
        width = height
    else:
        width, pos = _read_varint(data, pos, "width")
        width += 1
        if width == height:
            raise BitstreamError("corrupt stream: a square image not marked square")
    pad_h = pad_w = 0
    if flags & _P:
        pad_h, pos = _read_varint(data, pos, "padding")
        pad_w, pos = _read_varint(data, pos, "padding")
        if not (pad_h or pad_w):
            raise BitstreamError("corrupt stream: padding flag set but both pads are zero")
    q_kind = flags >> _Q_SHIFT & 3
    if q_kind in (_Q_POS, _Q_NEG):
        v, pos = _read_varint(data, pos, "quality")
        if v >= _INT_LIMIT:
            raise BitstreamError("corrupt stream: quality field out of range")
        quality = float(v if q_kind == _Q_POS else -1 - v)
    else:
        fmt = _F32 if q_kind == _Q_F32 else _F64
        if len(data) < pos + fmt.size:
            raise BitstreamError("truncated stream: header ends inside the quality field")
        (quality,) = fmt.unpack_from(data, pos)
        pos += fmt.size
        if not math.isfinite(quality) or _quality_field(quality)[0] != q_kind:
            raise BitstreamError(f"corrupt stream: quality {quality!r} stored in the wrong form")
    n = flags >> _N_SHIFT & 3
    if n == 3:
        extra, pos = _read_varint(data, pos, "string count")
        n += extra
        if n > MAX_STRINGS:
            raise BitstreamError(f"corrupt stream: {n} strings announced (at most {MAX_STRINGS})")
    rest = []
    for _ in range(n - 1):
        ln, pos = _read_varint(data, pos, "length")
        rest.append(ln)
    if len(data) < pos + _CRC.size:
        raise BitstreamError("truncated stream: header incomplete (checksum missing)")
    (crc,) = _CRC.unpack_from(data, pos)
    size = pos + _CRC.size
    payload_len = len(data) - size
    if n == 0 and payload_len:
        raise BitstreamError(f"corrupt stream: {payload_len} payload bytes follow a header with no strings")
    if sum(rest) > payload_len:
        raise BitstreamError(f"truncated stream: payload has {payload_len} bytes, the header's lengths "
                             f"need at least {sum(rest)}")
    if zlib.crc32(data[size:], zlib.crc32(data[:pos])) & 0xFFFFFFFF != crc:
        raise BitstreamError("checksum mismatch: the stream is corrupted, truncated or has bytes appended")
    _check_size(height, width, pad_h, pad_w, lambda msg: BitstreamError("corrupt stream: " + msg))
    codec = CODEC_TAGS.get(tag)
    if codec is None:
        known = ", ".join(f"{name} (0x{t:02x})" for t, name in sorted(CODEC_TAGS.items())) or "none"
        raise BitstreamError(f"stream's codec tag 0x{tag:02x} is not registered in this cdlib (known codecs: "
                             f"{known}); the built-in codecs register on `import cdlib.codecs`")
    lengths = ([payload_len - sum(rest)] + rest) if n else []
    strings, off = [], size
    for ln in lengths:
        strings.append(data[off:off + ln])
        off += ln
    return Header(codec, cfg_hash, height, width, pad_h, pad_w, quality, tuple(lengths), size), strings


def peek_codec(data: bytes) -> str:
    """The codec name of a stream (verifies the whole stream first)."""
    return unpack(data)[0].codec


def bpp(stream_or_bytes, height: int, width: int) -> float:
    """Bits per pixel of a stream (or of a byte count): ``8 * len / (H * W)``, the one bpp function of
    cdlib (``cdlib.eval.bpp_from_bytes`` is this function)."""
    n = stream_or_bytes if isinstance(stream_or_bytes, (int, np.integer)) else len(stream_or_bytes)
    return 8.0 * int(n) / (int(height) * int(width))
