import pytest

from nanobanana_queue.workers.storage.sniff import (
    GIF,
    JPEG,
    MIN_SNIFF_BYTES,
    PNG,
    WEBP,
    ImageType,
    sniff_image,
)
from tests.workers.storage.helpers import image_bytes


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", PNG),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01", JPEG),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", WEBP),
        (b"GIF87a\x01\x00\x01\x00\x00\x00", GIF),
        (b"GIF89a\x01\x00\x01\x00\x00\x00", GIF),
        (b"<!DOCTYPE html><html>", None),
        (b'{"error": "expired"}', None),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"", None),
        (b"\x89PN", None),
        (b"\xff\xd8", None),
        (b"RIFF\x24\x00\x00\x00WEB", None),
        (b"GIF8", None),
    ],
    ids=[
        "png",
        "jpeg",
        "webp",
        "gif87a",
        "gif89a",
        "html",
        "json",
        "riff-wav",
        "empty",
        "truncated-png",
        "truncated-jpeg",
        "truncated-webp",
        "truncated-gif",
    ],
)
def test_sniff_table(head, expected):
    assert sniff_image(head) == expected


@pytest.mark.parametrize(
    ("fmt", "expected"), [("PNG", PNG), ("JPEG", JPEG), ("WEBP", WEBP), ("GIF", GIF)]
)
def test_images_written_by_pillow_are_recognised_from_their_first_bytes(fmt, expected):
    assert sniff_image(image_bytes(fmt)[:MIN_SNIFF_BYTES]) == expected


def test_image_type_is_a_frozen_value():
    assert ImageType("png", "image/png") == PNG
    with pytest.raises(AttributeError):
        PNG.extension = "gif"  # type: ignore[misc]
