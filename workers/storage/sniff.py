"""Decide what an image is from its first bytes, never from HTTP headers.

A result link's ``Content-Type`` is whatever the serving host claims; the magic bytes are
what a browser or decoder will actually act on. So the object key's extension and the
stored ``Content-Type`` come from here, and anything that is not one of the four formats
the API produces is refused before it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GIF", "JPEG", "MIN_SNIFF_BYTES", "PNG", "WEBP", "ImageType", "sniff_image"]

#: Bytes needed to tell every supported format apart (WebP: ``RIFF`` + size + ``WEBP``).
MIN_SNIFF_BYTES = 12


@dataclass(frozen=True)
class ImageType:
    """One supported image format: the key extension and the ``Content-Type`` to store."""

    extension: str
    content_type: str


PNG = ImageType("png", "image/png")
JPEG = ImageType("jpg", "image/jpeg")
WEBP = ImageType("webp", "image/webp")
GIF = ImageType("gif", "image/gif")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"  # start-of-image marker followed by the first segment's marker


def sniff_image(head: bytes) -> ImageType | None:
    """The format whose signature ``head`` starts with, or None (not an image, or too short).

    Pass at least ``MIN_SNIFF_BYTES`` bytes when the stream has that many; a shorter head
    only matches formats whose whole signature fits in it.
    """
    if head.startswith(_PNG_SIGNATURE):
        return PNG
    if head.startswith(_JPEG_SOI):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    return None
