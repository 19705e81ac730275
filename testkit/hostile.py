"""Hostile uploads, made up on the spot: for the upload tests and the fuzz bench.

``named_cases()`` are the files people (or attackers) really send, each with the answer the
predict API must give; ``random_upload()`` mutates real encodings at random for fuzzing.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from testkit.synthetic import photo_bytes, synthetic_photo

# A file name that would run script if any page failed to escape it.
HOSTILE_NAME = '<img src=x onerror="window.__xss=1">&amp;'


@dataclass(frozen=True)
class Case:
    """One upload and the answer expected: ``status`` and a regex the message must match
    (the ``error`` for a 4xx, one of the ``notes`` or the format for a 200)."""

    name: str
    data: bytes
    filename: str
    content_type: str
    status: int
    expect: str


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size, with one tiny compressed row: a classic bomb probe."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def png_bomb(side: int = 12_000) -> bytes:
    """A complete, valid 1-bit PNG of side x side black pixels: megapixels in kilobytes."""
    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body)
            + _chunk(b"IEND", b""))


def _encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _animated_gif() -> bytes:
    # Frames with something in them: a flat colour is refused as not a photo of a pet.
    frames = [synthetic_photo("dog", size=32, seed=i) for i in range(4)]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80,
                    loop=0)


def _png_16bit() -> bytes:
    ramp = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    return _encoded(Image.fromarray(ramp), "PNG")


def named_cases() -> list[Case]:
    """Every kind of troublesome upload the lab promises to answer clearly."""
    jpeg = photo_bytes("cat", size=96, seed=5)
    png = photo_bytes("dog", "PNG", size=96, seed=6)
    bomb = png_bomb()  # 144 MP in a few kB
    return [
        Case("empty", b"", "empty.jpg", "image/jpeg", 422, "empty"),
        Case("text-named-jpg", b"just some words\n" * 20, "cat.jpg", "image/jpeg", 415,
             "not a photo"),
        Case("html-named-png", b"<!DOCTYPE html><script>alert(1)</script>", "dog.png",
             "image/png", 415, "web page, not a photo"),
        Case("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\n", "scan.pdf", "application/pdf", 415,
             "PDF document"),
        Case("zip", b"PK\x03\x04" + b"\x00" * 60, "photos.zip", "application/zip", 415,
             "zip archive"),
        Case("svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>',
             "cat.svg", "image/svg+xml", 415, "SVG drawing"),
        Case("eps-never-reaches-ghostscript", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 "
             b"10 10\n(x) print\n", "cat.jpg", "image/jpeg", 415, "not a photo"),
        Case("heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 40,
             "IMG_0001.HEIC", "image/heic", 415, "HEIC photo"),
        Case("corrupt-jpeg", jpeg[:20] + bytes(range(256)) * 8, "cat.jpg", "image/jpeg", 422,
             "corrupt"),
        Case("truncated-jpeg", jpeg[: len(jpeg) // 2], "cat.jpg", "image/jpeg", 422,
             "corrupt or truncated"),
        Case("truncated-png", png[: len(png) // 2], "dog.png", "image/png", 422,
             "corrupt or truncated"),
        Case("decompression-bomb", bomb, "bomb.png", "image/png", 413, "too large"),
        Case("huge-dimensions-claimed", _png_header_only(100_000, 100_000), "big.png",
             "image/png", 413, "too large"),
        Case("absurd-strip", _png_header_only(40_000, 1), "strip.png", "image/png", 413,
             "too large"),
        Case("zero-size-header", _png_header_only(0, 0), "zero.png", "image/png", 422,
             "corrupt"),
        # Readable, but nothing in them to judge: no verdict about nothing.
        Case("fully-transparent-png", _encoded(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "PNG"),
             "clear.png", "image/png", 422, "doesn't look like a photo of a pet"),
        Case("flat-colour-jpeg", _encoded(Image.new("RGB", (64, 64), (128, 128, 128)), "JPEG"),
             "grey.jpg", "image/jpeg", 422, "doesn't look like a photo of a pet"),
        # Real photos in unusual encodings: answered, with a note on what was converted.
        Case("animated-gif", _animated_gif(), "wag.gif", "image/gif", 200, "animated"),
        Case("16-bit-png", _png_16bit(), "scan16.png", "image/png", 200, "16-bit"),
        Case("cmyk-jpeg", photo_bytes("cat", mode="CMYK", size=64), "print.jpg",
             "image/jpeg", 200, "CMYK"),
        # The type comes from the bytes: a PNG called .jpg is a PNG.
        Case("png-named-jpg", png, "cat.jpg", "image/jpeg", 200, "format:PNG"),
        Case("jpeg-named-gif", jpeg, "cat.gif", "image/gif", 200, "format:JPEG"),
    ]


FUZZ_NAMES = ("cat.jpg", "../../etc/passwd", "<img src=x onerror=alert(1)>.png", "",
              "a" * 600 + ".jpg", "ç̃at 🐱.webp", "dog\r\nX-Injected: 1.jpg", "C:\\fake\\dog.bmp",
              "photo.heic", ".jpg")
FUZZ_TYPES = ("image/jpeg", "image/png", "application/octet-stream", "text/html", "",
              "image/gif; charset=<x>")


def random_upload(rng: np.random.Generator) -> tuple[str, bytes, str]:
    """(file name, bytes, content type), as ``requests`` takes a file: a real encoding,
    mutated one of several ways, under a name that may be hostile too."""
    fmt = rng.choice(["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"])
    size = int(rng.integers(4, 80))
    data = bytearray(photo_bytes(str(rng.choice(["cat", "dog"])), str(fmt), size=size,
                                 seed=int(rng.integers(1 << 30))))
    how = rng.integers(0, 8)
    if how == 0:  # flip bits anywhere, header included
        for _ in range(int(rng.integers(1, 40))):
            pos = int(rng.integers(len(data)))
            data[pos] ^= 1 << int(rng.integers(8))
    elif how == 1:  # cut anywhere
        data = data[: int(rng.integers(0, len(data) + 1))]
    elif how == 2:  # overwrite a run with random bytes
        start = int(rng.integers(len(data)))
        span = int(rng.integers(1, 200))
        data[start:start + span] = rng.bytes(span)
    elif how == 3:  # a header glued to another format's body
        other = photo_bytes("cat", str(rng.choice(["JPEG", "PNG", "GIF"])), size=size)
        cut = int(rng.integers(4, 40))
        data = data[:cut] + bytearray(other[cut:])
    elif how == 4:  # pure noise, sometimes long
        data = bytearray(rng.bytes(int(rng.integers(0, 300_000 if rng.random() < .1 else 2000))))
    elif how == 5:  # a chunk repeated many times
        start = int(rng.integers(len(data)))
        data = data[:start] + data[start:start + 64] * int(rng.integers(2, 2000))
    elif how == 6:  # a PNG header claiming a random, often enormous, size
        data = bytearray(_png_header_only(int(rng.integers(0, 2**31)),
                                          int(rng.integers(0, 2**31))))
    # how == 7: the untouched photo, under a hostile name
    name = str(rng.choice(FUZZ_NAMES))
    return name, bytes(data), str(rng.choice(FUZZ_TYPES))
