"""Classical image codecs behind the :class:`~cdlib.codecs.base.Codec` interface.

=========  ==================  ==============================================  ==========================
name       label               quality                                         default sweep (low→high)
=========  ==================  ==============================================  ==========================
jpeg       JPEG (4:4:4)        libjpeg quality 1..100 (Pillow)                 10 20 35 50 70 90
webp       WebP                libwebp quality 0..100, lossy (Pillow)          5 20 40 60 80 95
jpeg2000   JPEG 2000           target PSNR in dB, one layer (Pillow/OpenJPEG)  24 27 30 33 36 40
avif       AVIF                libavif quality 0..100, 4:4:4 (Pillow/aom)      10 30 50 65 80 90
hevc       HEVC (x265)         QP 0..51, all-intra 4:4:4 8-bit (ffmpeg)        42 37 32 27 22
vvc        VVC (VVenC)         QP 0..63, all-intra 4:2:0 10-bit (ffmpeg)       42 37 32 27 22
=========  ==================  ==============================================  ==========================

The payload of every stream is the codec's own file or elementary stream, byte for byte: the
JPEG/WebP/AVIF file, the raw JPEG 2000 codestream (``.j2k``, no JP2 boxes), the raw Annex-B
HEVC/VVC elementary stream with its parameter sets.  Nothing is stripped; bpp counts it all
plus the small :mod:`cdlib.bitstream` container header.

HEVC and VVC are *stand-ins* for BPG and VTM, run through the static FFmpeg binary that
``imageio-ffmpeg`` ships (libx265 and libvvenc encoders, FFmpeg's native decoders):

* ``hevc``: RGB → full-range BT.601 Y'CbCr 4:4:4 8-bit (as BPG's default colour space, but 4:4:4),
  x265 ``--preset slow`` with exact constant QP (``ipratio=1`` so the I slice uses QP itself),
  psycho-visual RD off (``psy-rd=0:psy-rdoq=0``, as BPG's x265 set-up), one IDR picture with
  its VPS/SPS/PPS, no encoder-info SEI (``info=0``).  ``get_codec("hevc", chroma="420")`` codes 4:2:0
  8-bit with the vvc codec's chroma filters instead (to compare the two encoders at one chroma format).
* ``vvc``: RGB → full-range BT.601 Y'CbCr 4:2:0 10-bit (VVenC only takes 4:2:0), VVenC
  ``medium`` in an all-intra configuration (``IntraPeriod=1, GOPSize=1``), constant QP
  (``-qpa 0``, ``IntraQPOffset=0``), no temporal filter, single-threaded, no access unit delimiter.

Images smaller than an encoder accepts (x265: 16 px; VVC: 32 px and even sides) are padded at
the bottom/right by edge replication; the container records the padding and ``decode``
crops it away, so any size round-trips.  FFmpeg's libvvenc wrapper refuses access units larger
than ``width * height`` bytes (bpp > 8, e.g. QP 0 on noise); the vvc encoder then retries with
a larger edge-replicated padding (counted in bpp like any other padding).

``encode_batch``/``decode_batch`` of hevc/vvc run one FFmpeg process per chunk of same-sized
images (all-intra sequence, each frame written to its own file by the ``image2`` muxer, so
each stream holds exactly one independently decodable picture with its parameter sets), and
run the chunks in parallel.  Batch streams have exactly the length of single-image streams and
decode to the same pixels (a few header bits, e.g. VVC's picture order count, differ).
Anything unexpected in a chunk falls back to one process per image.

Analysis: :func:`nal_unit_sizes` splits an HEVC/VVC payload into its NAL units (parameter sets, picture
header, SEI, slices) with their sizes; ``colour_roundtrip`` of an FFmpeg codec runs only its colour
conversion (RGB -> Y'CbCr format -> RGB), whose PSNR is a ceiling for that codec.

Integrity: every stream carries a CRC-32 (:mod:`cdlib.bitstream`).  Past that check, garbage
payloads raise :class:`BitstreamError`; note that FFmpeg's HEVC decoder conceals a truncated or
bit-flipped slice instead of failing, as HEVC has no checksum unless a picture hash SEI is sent.
"""
from __future__ import annotations

import functools
import io
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from PIL import Image

from ..bitstream import BitstreamError, Header, pack, same_model, unpack
from .base import Codec, as_rgb_uint8, register_codec

__all__ = ["JPEGCodec", "WebPCodec", "JPEG2000Codec", "AVIFCodec", "HEVCCodec", "VVCCodec", "nal_unit_sizes",
           "pad_edge", "ffmpeg_exe"]


# --------------------------------------------------------------------------- helpers


def pad_edge(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int, int]:
    """Pad ``image`` (H, W, 3) at the bottom/right to at least ``height`` x ``width`` by edge replication."""
    h, w = image.shape[:2]
    ph, pw = max(0, height - h), max(0, width - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return np.ascontiguousarray(image), ph, pw


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _int_quality(codec: str, quality, lo: int, hi: int, what: str = "quality") -> int:
    try:
        q = float(quality)
    except (TypeError, ValueError):
        q = float("nan")
    if not (q == q and q.is_integer() and lo <= q <= hi) or isinstance(quality, bool):
        raise ValueError(f"{codec}: {what} must be an integer in {lo}..{hi}, got {quality!r}")
    return int(q)


def _float_quality(codec: str, quality, lo: float, hi: float, what: str) -> float:
    try:
        q = float(quality)
    except (TypeError, ValueError):
        q = float("nan")
    if not (lo <= q <= hi) or isinstance(quality, bool):
        raise ValueError(f"{codec}: {what} must be a number in {lo}..{hi}, got {quality!r}")
    return q


def _single(strings: list[bytes], codec: str) -> bytes:
    if len(strings) != 1:
        raise BitstreamError(f"{codec}: expected 1 payload string, the stream has {len(strings)}")
    if not strings[0]:
        raise BitstreamError(f"{codec}: empty payload")
    return strings[0]


def _padded_size(header: Header) -> tuple[int, int]:
    return header.height + header.pad_h, header.width + header.pad_w


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


# --------------------------------------------------------------------------- Pillow codecs


class _PillowCodec(Codec):
    """Codecs that Pillow reads and writes in memory."""

    pil_format = ""

    def _save_args(self, quality) -> dict:
        raise NotImplementedError

    def _encode(self, image, quality):
        kwargs = self._save_args(quality)
        buf = io.BytesIO()
        Image.fromarray(image, "RGB").save(buf, format=self.pil_format, **kwargs)
        return [buf.getvalue()], 0, 0

    def _decode(self, strings, header):
        data = _single(strings, self.name)
        h, w = _padded_size(header)
        with Image.open(io.BytesIO(data), formats=[self.pil_format]) as im:
            if im.size != (w, h):
                raise BitstreamError(f"{self.name}: payload is a {im.size[0]}x{im.size[1]} image, "
                                     f"header says {w}x{h}")
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.array(im, dtype=np.uint8)


@register_codec("jpeg")
class JPEGCodec(_PillowCodec):
    """Baseline JPEG (libjpeg-turbo via Pillow), no chroma subsampling, optimised Huffman tables."""

    name = "jpeg"
    label = "JPEG (4:4:4)"
    qualities = (10, 20, 35, 50, 70, 90)
    pil_format = "JPEG"

    def _save_args(self, quality):
        q = _int_quality(self.name, quality, 1, 100)
        return {"quality": q, "subsampling": 0, "optimize": True}


@register_codec("webp")
class WebPCodec(_PillowCodec):
    """Lossy WebP (libwebp via Pillow; VP8 intra, always 4:2:0), slowest/best method 6."""

    name = "webp"
    label = "WebP"
    qualities = (5, 20, 40, 60, 80, 95)
    pil_format = "WEBP"

    def _save_args(self, quality):
        q = _int_quality(self.name, quality, 0, 100)
        return {"quality": q, "lossless": False, "method": 6}


@register_codec("jpeg2000")
class JPEG2000Codec(_PillowCodec):
    """JPEG 2000 (OpenJPEG via Pillow): 9/7 wavelet, colour transform, one quality layer.

    ``quality`` is the target PSNR in dB of that layer (OpenJPEG's fixed-quality allocation,
    ``quality_mode="dB"``): monotone, and the achieved RGB PSNR lands close to it.  The payload
    is the raw codestream (no JP2 boxes).
    """

    name = "jpeg2000"
    label = "JPEG 2000"
    qualities = (24, 27, 30, 33, 36, 40)
    pil_format = "JPEG2000"

    def _save_args(self, quality):
        q = _float_quality(self.name, quality, 1.0, 120.0, "quality (target PSNR in dB)")
        return {"quality_mode": "dB", "quality_layers": [q], "irreversible": True, "mct": 1,
                "no_jp2": True}


@register_codec("avif")
class AVIFCodec(_PillowCodec):
    """AVIF (libavif + libaom via Pillow), 4:4:4, full range, speed 6, one thread."""

    name = "avif"
    label = "AVIF"
    qualities = (10, 30, 50, 65, 80, 90)
    pil_format = "AVIF"

    def _save_args(self, quality):
        q = _int_quality(self.name, quality, 0, 100)
        return {"quality": q, "subsampling": "4:4:4", "speed": 6, "range": "full", "max_threads": 1}


# --------------------------------------------------------------------------- FFmpeg codecs


@functools.lru_cache(maxsize=None)
def ffmpeg_exe() -> str:
    """Path of the FFmpeg binary bundled with imageio-ffmpeg."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise RuntimeError("the hevc and vvc codecs need the imageio-ffmpeg package "
                           "(pip install imageio-ffmpeg)") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def _tail(stderr: bytes, n: int = 400) -> str:
    text = stderr.decode("utf-8", "replace").strip().replace("\n", " | ")
    return text[-n:] if text else "no message"


class _FFmpegCodec(Codec):
    """An intra video encoder run through FFmpeg on raw RGB frames (stdin/stdout pipes)."""

    fmt = ""                  # raw elementary stream muxer/demuxer ("hevc", "vvc")
    pix_fmt = ""              # what the encoder codes
    sws_flags = "accurate_rnd+full_chroma_int+bitexact"
    min_side = 16
    multiple = 1              # chroma subsampling factor the sides must be a multiple of
    qp_range = (0, 51)
    capacity_retries = 0      # extra padding attempts when the encoder refuses (see VVCCodec)
    # signalled in the VUI as well as used explicitly on both sides: full-range BT.601, sRGB
    color_args = ["-color_range", "pc", "-colorspace", "smpte170m", "-color_primaries", "bt709",
                  "-color_trc", "iec61966-2-1"]

    def __init__(self, preset: str | None = None, workers: int | None = None, batch: bool = True,
                 timeout: float = 60.0):
        if preset is not None:
            self.preset = preset
        self.workers = _workers() if workers is None else max(1, int(workers))
        self.batch = bool(batch)
        self.timeout = float(timeout)

    # -- command lines --------------------------------------------------------
    def _encoder_args(self, qp: int) -> list[str]:
        raise NotImplementedError

    def _qp(self, quality) -> int:
        return _int_quality(self.name, quality, *self.qp_range, what="quality (QP)")

    def _encode_cmd(self, h: int, w: int, qp: int) -> list[str]:
        vf = (f"scale=out_color_matrix=bt601:out_range=full:flags={self.sws_flags},"
              f"format={self.pix_fmt}")
        return [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", "25",
                "-i", "pipe:0", "-threads", "1", "-vf", vf, *self.color_args,
                *self._encoder_args(qp)]

    def _decode_cmd(self) -> list[str]:
        vf = f"scale=in_color_matrix=bt601:in_range=full:flags={self.sws_flags},format=rgb24"
        return [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-threads", "1",
                "-f", self.fmt, "-i", "pipe:0", "-vf", vf]

    def colour_roundtrip(self, image) -> np.ndarray:
        """``image`` (uint8 ``(H, W, 3)``) through this codec's colour conversion and back, without coding:
        RGB -> its Y'CbCr format (chroma subsampling and bit depth included) -> RGB, with the same FFmpeg
        filters as ``encode``/``decode``.  Its PSNR is the ceiling of the codec's PSNR on that image."""
        img = as_rgb_uint8(image)
        h, w = img.shape[:2]
        padded, _, _ = pad_edge(img, _round_up(h, self.multiple), _round_up(w, self.multiple))
        H, W = padded.shape[:2]
        vf = (f"scale=out_color_matrix=bt601:out_range=full:flags={self.sws_flags},format={self.pix_fmt},"
              f"scale=in_color_matrix=bt601:in_range=full:flags={self.sws_flags},format=rgb24")
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt",
               "rgb24", "-s", f"{W}x{H}", "-i", "pipe:0", "-threads", "1", "-vf", vf, "-f", "rawvideo",
               "-pix_fmt", "rgb24", "pipe:1"]
        r = subprocess.run(cmd, input=padded.tobytes(), capture_output=True, timeout=self._time_limit(H * W))
        if r.returncode != 0 or len(r.stdout) != H * W * 3:
            raise RuntimeError(f"{self.name}: colour round trip failed (exit {r.returncode}): {_tail(r.stderr)}")
        return np.frombuffer(r.stdout, dtype=np.uint8).reshape(H, W, 3)[:h, :w].copy()

    def _time_limit(self, pixels: int) -> float:
        return self.timeout + 2e-5 * pixels

    def _shape_for(self, h: int, w: int, attempt: int = 0) -> tuple[int, int]:
        """Padded size for an ``h`` x ``w`` image at encode attempt ``attempt``."""
        H = _round_up(max(h, self.min_side), self.multiple)
        W = _round_up(max(w, self.min_side), self.multiple)
        for i in range(attempt):  # double the area, the shorter side first
            if H <= W:
                H *= 2
            else:
                W *= 2
        return H, W

    # -- one image --------------------------------------------------------------
    def _encode_padded(self, image: np.ndarray, qp: int) -> bytes:
        h, w = image.shape[:2]
        cmd = self._encode_cmd(h, w, qp) + ["-f", self.fmt, "pipe:1"]
        try:
            r = subprocess.run(cmd, input=image.tobytes(), capture_output=True,
                               timeout=self._time_limit(h * w))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.name}: ffmpeg encoder timed out on a {w}x{h} image") from None
        if r.returncode != 0 or not r.stdout:
            raise RuntimeError(f"{self.name}: ffmpeg encoder failed on a {w}x{h} image "
                               f"(exit {r.returncode}): {_tail(r.stderr)}")
        return r.stdout

    def _encode(self, image, quality):
        qp = self._qp(quality)
        h, w = image.shape[:2]
        for attempt in range(self.capacity_retries + 1):
            padded, ph, pw = pad_edge(image, *self._shape_for(h, w, attempt))
            try:
                return [self._encode_padded(padded, qp)], ph, pw
            except RuntimeError as exc:
                if attempt == self.capacity_retries or "timed out" in str(exc):
                    raise
        raise AssertionError("unreachable")

    def _decode(self, strings, header):
        data = _single(strings, self.name)
        h, w = _padded_size(header)
        cmd = self._decode_cmd() + ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        try:
            r = subprocess.run(cmd, input=data, capture_output=True, timeout=self._time_limit(h * w))
        except subprocess.TimeoutExpired:
            raise BitstreamError(f"{self.name}: decoder timed out (corrupt payload?)") from None
        if r.returncode != 0:
            raise BitstreamError(f"{self.name}: payload could not be decoded "
                                 f"(ffmpeg exit {r.returncode}): {_tail(r.stderr)}")
        if len(r.stdout) != h * w * 3:
            raise BitstreamError(f"{self.name}: decoder gave {len(r.stdout)} bytes, expected one "
                                 f"{w}x{h} picture ({h * w * 3} bytes)")
        return np.frombuffer(r.stdout, dtype=np.uint8).reshape(h, w, 3)

    # -- batches ------------------------------------------------------------------
    def _chunks(self, n: int, pixels: int) -> list[range]:
        """Split ``n`` same-sized frames into at most ``workers`` chunks (and at most ~16 Mpx each)."""
        per = max(1, (16 << 20) // max(1, pixels))
        k = max(min(self.workers, -(-n // 4)), -(-n // per), 1)
        size = -(-n // k)
        return [range(i, min(n, i + size)) for i in range(0, n, size)]

    def _map(self, fn, items):
        items = list(items)
        if len(items) <= 1 or self.workers <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            return list(pool.map(fn, items))

    def _encode_chunk(self, frames: list[np.ndarray], qp: int) -> list[bytes] | None:
        """Encode same-sized padded frames in one process, one file per frame; None on any failure."""
        h, w = frames[0].shape[:2]
        with tempfile.TemporaryDirectory(prefix="cdlib-") as d:
            cmd = self._encode_cmd(h, w, qp) + ["-f", "image2", os.path.join(d, "%06d.bin")]
            try:
                r = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames),
                                   capture_output=True, timeout=self._time_limit(h * w * len(frames)))
            except subprocess.TimeoutExpired:
                return None
            names = [f"{i + 1:06d}.bin" for i in range(len(frames))]
            if r.returncode != 0 or sorted(os.listdir(d)) != names:
                return None
            out = []
            for name in names:
                with open(os.path.join(d, name), "rb") as fh:
                    out.append(fh.read())
        if not all(out):
            return None
        return out

    def encode_batch(self, images: Sequence, quality=None) -> list[bytes]:
        imgs = [as_rgb_uint8(im) for im in images]
        if not self.batch or len(imgs) < 2:
            return [self.encode(im, quality) for im in imgs]
        q = self.qualities[len(self.qualities) // 2] if quality is None else quality
        qp = self._qp(q)
        out: list[bytes | None] = [None] * len(imgs)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(imgs):
            groups.setdefault(im.shape[:2], []).append(i)
        jobs = []
        for (h, w), idx in groups.items():
            H, W = self._shape_for(h, w)
            for chunk in self._chunks(len(idx), H * W):
                jobs.append(([idx[j] for j in chunk], H, W))

        def run(job):
            ids, H, W = job
            padded = [pad_edge(imgs[i], H, W)[0] for i in ids]
            payloads = self._encode_chunk(padded, qp)
            if payloads is None:  # fall back to one process per image (with its own retries)
                return [self.encode(imgs[i], q) for i in ids]
            h, w = imgs[ids[0]].shape[:2]
            return [pack(self.name, [p], h, w, H - h, W - w, float(q), self.cfg_hash(q))
                    for p in payloads]

        for (ids, _, _), streams in zip(jobs, self._map(run, jobs)):
            for i, s in zip(ids, streams):
                out[i] = s
        return out  # type: ignore[return-value]

    def _count_pictures(self, payload: bytes) -> int:
        raise NotImplementedError

    def _decode_chunk(self, payloads: list[bytes], h: int, w: int) -> list[np.ndarray] | None:
        """Decode one-picture payloads of the same size in one process; None on any doubt."""
        if any(self._count_pictures(p) != 1 for p in payloads):
            return None
        frame = h * w * 3
        with tempfile.TemporaryDirectory(prefix="cdlib-") as d:
            cmd = self._decode_cmd() + ["-f", "image2", "-c:v", "rawvideo", "-pix_fmt", "rgb24",
                                        os.path.join(d, "%06d.rgb")]
            try:
                r = subprocess.run(cmd, input=b"".join(payloads), capture_output=True,
                                   timeout=self._time_limit(h * w * len(payloads)))
            except subprocess.TimeoutExpired:
                return None
            names = [f"{i + 1:06d}.rgb" for i in range(len(payloads))]
            if r.returncode != 0 or sorted(os.listdir(d)) != names:
                return None
            out = []
            for name in names:
                path = os.path.join(d, name)
                if os.path.getsize(path) != frame:
                    return None
                out.append(np.fromfile(path, dtype=np.uint8).reshape(h, w, 3))
        return out

    def decode_batch(self, streams: Sequence[bytes], batch_size: int | None = None) -> list[np.ndarray]:
        """Images of many streams, in chunks of frames across worker processes (``batch_size`` is not
        used: the chunks are sized by :meth:`_chunks`)."""
        streams = list(streams)
        if not self.batch or len(streams) < 2:
            return [self.decode(s) for s in streams]
        parsed = []
        for s in streams:  # the same checks as Codec.decode, in order; raise on the first bad one
            header, strings = unpack(s)
            if header.codec != self.name or not same_model(header.cfg_hash, self.cfg_hash(header.quality)) \
                    or len(strings) != 1 or not strings[0]:
                parsed.append(None)
            else:
                parsed.append((header, strings[0]))
        out: list[np.ndarray | None] = [None] * len(streams)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(parsed):
            if p is not None:
                groups.setdefault(_padded_size(p[0]), []).append(i)
        jobs = []
        for (H, W), idx in groups.items():
            for chunk in self._chunks(len(idx), H * W):
                jobs.append(([idx[j] for j in chunk], H, W))

        def run(job):
            ids, H, W = job
            frames = self._decode_chunk([parsed[i][1] for i in ids], H, W)
            if frames is None:
                return None
            return [np.ascontiguousarray(f[: parsed[i][0].height, : parsed[i][0].width])
                    for i, f in zip(ids, frames)]

        for (ids, _, _), images in zip(jobs, self._map(run, jobs)):
            if images is not None:
                for i, im in zip(ids, images):
                    out[i] = im
        # whatever the fast path did not settle goes through decode(), in order (raises there)
        return [self.decode(s) if im is None else im for s, im in zip(streams, out)]


def _nal_units(payload: bytes) -> list[bytes] | None:
    """Annex-B NAL units (None if the payload does not start with a start code)."""
    parts = payload.split(b"\x00\x00\x01")
    if len(parts) < 2 or parts[0].strip(b"\x00"):
        return None
    return [p for p in parts[1:] if p]


# NAL unit types that carry no coded slice data (H.265 Table 7-1; H.266 Table 5); every other type of
# these ranges is a coded slice ("slice").
_NON_VCL = {
    "hevc": {32: "VPS", 33: "SPS", 34: "PPS", 35: "AUD", 36: "EOS", 37: "EOB", 38: "FD", 39: "SEI", 40: "SEI"},
    "vvc": {12: "OPI", 13: "DCI", 14: "VPS", 15: "SPS", 16: "PPS", 17: "APS", 18: "APS", 19: "PH", 20: "AUD",
            21: "EOS", 22: "EOB", 23: "SEI", 24: "SEI", 25: "FD"},
}


def nal_unit_sizes(payload: bytes, codec: str) -> list[tuple[str, int]]:
    """``(kind, bytes)`` of every NAL unit of an Annex-B ``"hevc"`` or ``"vvc"`` payload, in stream order, each
    with its start code (3 or 4 bytes): ``kind`` is the type name of a non-VCL unit (``VPS``, ``SPS``,
    ``PPS``; for VVC also ``APS`` (loop-filter parameters), ``PH`` (picture header); ``SEI``, ``AUD``, ...) or
    ``"slice"`` for a coded slice (its slice header included).  The sizes add up to ``len(payload)``."""
    if codec not in _NON_VCL:
        raise ValueError(f"codec must be one of {sorted(_NON_VCL)}, got {codec!r}")
    starts, i = [], payload.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i)
        i = payload.find(b"\x00\x00\x01", i + 3)
    if not starts or payload[: starts[0]].strip(b"\x00"):
        raise BitstreamError(f"{codec}: the payload is not an Annex-B stream (no leading start code)")
    # a zero byte before a start code belongs to that (4-byte) start code
    bounds = [0] + [s - 1 if s > 0 and payload[s - 1] == 0 else s for s in starts[1:]] + [len(payload)]
    out = []
    for k, s in enumerate(starts):
        head = payload[s + 3: s + 5]
        if len(head) < 2:
            raise BitstreamError(f"{codec}: truncated NAL unit header at byte {s}")
        kind = (head[0] >> 1) & 0x3F if codec == "hevc" else (head[1] >> 3) & 0x1F
        out.append((_NON_VCL[codec].get(kind, "slice"), bounds[k + 1] - bounds[k]))
    return out


@register_codec("hevc")
class HEVCCodec(_FFmpegCodec):
    """HEVC intra (x265) with exact QP, 4:4:4 8-bit: the stand-in for BPG.  ``quality`` = QP."""

    name = "hevc"
    label = "HEVC (x265)"
    qualities = (42, 37, 32, 27, 22)
    fmt = "hevc"
    pix_fmt = "yuv444p"
    min_side = 16  # x265 refuses smaller pictures
    multiple = 1
    qp_range = (0, 51)
    preset = "slow"

    def __init__(self, chroma: str = "444", **kw):
        """``chroma="420"``: code 4:2:0 8-bit instead, with the VVC codec's chroma filters, for comparing the
        two encoders at the same chroma format (label "HEVC (x265, 4:2:0)")."""
        super().__init__(**kw)
        if chroma not in ("444", "420"):
            raise ValueError(f"hevc: chroma must be '444' or '420', got {chroma!r}")
        self.chroma = chroma
        if chroma == "420":
            self.pix_fmt, self.multiple, self.label = "yuv420p", 2, "HEVC (x265, 4:2:0)"
            self.sws_flags = VVCCodec.sws_flags

    def _encoder_args(self, qp):
        params = (f"qp={qp}:ipratio=1:aq-mode=0:psy-rd=0:psy-rdoq=0:keyint=1:repeat-headers=1:"
                  "info=0:log-level=error:pools=none:frame-threads=1")
        return ["-c:v", "libx265", "-preset", self.preset, "-x265-params", params]

    def _count_pictures(self, payload):
        nals = _nal_units(payload)
        if nals is None:
            return 0
        n = 0
        for nal in nals:
            if len(nal) < 3:
                continue
            kind, layer = (nal[0] >> 1) & 0x3F, ((nal[0] & 1) << 5) | (nal[1] >> 3)
            if kind < 32 and layer == 0 and nal[2] & 0x80:  # first_slice_segment_in_pic_flag
                n += 1
        return n


@register_codec("vvc")
class VVCCodec(_FFmpegCodec):
    """VVC all-intra (VVenC) with constant QP, 4:2:0 10-bit: the stand-in for VTM.  ``quality`` = QP."""

    name = "vvc"
    label = "VVC (VVenC)"
    qualities = (42, 37, 32, 27, 22)
    fmt = "vvc"
    pix_fmt = "yuv420p10le"
    sws_flags = "lanczos+accurate_rnd+full_chroma_int+bitexact"  # best 4:2:0 round trip here
    min_side = 32
    multiple = 2
    qp_range = (0, 63)
    capacity_retries = 3
    preset = "medium"

    def _encoder_args(self, qp):
        params = ("IntraPeriod=1:GOPSize=1:DecodingRefreshType=idr:IntraQPOffset=0:BIM=0:MCTF=0:"
                  "MaxParallelFrames=0:Threads=0:AccessUnitDelimiter=0")
        # Threads=0: VVenC's threaded mode drops frames at end of stream in FFmpeg's wrapper
        return ["-c:v", "libvvenc", "-preset", self.preset, "-qpa", "0", "-qp", str(qp),
                "-vvenc-params", params]

    def _count_pictures(self, payload):
        nals = _nal_units(payload)
        if nals is None:
            return 0
        n = 0
        for nal in nals:
            if len(nal) < 3:
                continue
            kind, layer = (nal[1] >> 3) & 0x1F, nal[0] & 0x3F
            if layer != 0:
                continue
            if kind == 19:  # PH_NUT
                n += 1
            elif kind <= 11 and nal[2] & 0x80:  # slice with sh_picture_header_in_slice_header_flag
                n += 1
        return n
