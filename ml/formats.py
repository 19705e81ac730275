"""Image formats known by their first bytes: the one table scan, predict and the photo route use."""

from __future__ import annotations

# (first bytes, format, MIME type). A WebP file is a RIFF file with "WEBP" at byte 8.
SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "PNG", "image/png"),
    (b"GIF87a", "GIF", "image/gif"), (b"GIF89a", "GIF", "image/gif"), (b"BM", "BMP", "image/bmp"),
    (b"II*\x00", "TIFF", "image/tiff"), (b"MM\x00*", "TIFF", "image/tiff"),
    (b"RIFF", "WEBP", "image/webp"),
)
# What tf.io.decode_image decodes: the formats scan trains on and the photo route shows inline.
DECODABLE = ("JPEG", "PNG", "GIF", "BMP")


def sniff(head: bytes, prefix: int | None = None) -> str | None:
    """The format whose signature ``head`` starts with (its first ``prefix`` bytes), or None."""
    return next((fmt for magic, fmt, _ in SIGNATURES if head.startswith(magic[:prefix])
                 and (fmt != "WEBP" or head[8:12] == b"WEBP")), None)


def mimetype(fmt: str | None) -> str | None:
    """The MIME type of a format ``sniff`` names, or None."""
    return next((mime for _, name, mime in SIGNATURES if name == fmt), None)
