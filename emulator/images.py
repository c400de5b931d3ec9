"""Result images: real files made with Pillow, rendered on first download and cached.

Rendering runs in a worker thread (never on the event loop) and concurrent downloads
of one file share a single render. The cache is an LRU bounded by total bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import struct
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from PIL import Image

from nanobanana_queue.emulator.constants import LONG_SIDE_PX

_CHUNK_BYTES = 64 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def ratio_of(size: str) -> tuple[int, int]:
    """Width:height of a ``size`` value; ``auto`` renders 1:1."""
    if size == "auto":
        return (1, 1)
    width, height = size.split(":")
    return (int(width), int(height))


def pixel_size(size: str, quality: str, max_pixels: int | None = None) -> tuple[int, int]:
    """Pixel dimensions: long side by quality, the ratio kept, capped at ``max_pixels``."""
    ratio_w, ratio_h = ratio_of(size)
    long_side = LONG_SIDE_PX[quality]
    if ratio_w >= ratio_h:
        width, height = long_side, max(1, round(long_side * ratio_h / ratio_w))
    else:
        width, height = max(1, round(long_side * ratio_w / ratio_h)), long_side
    if max_pixels is not None and width * height > max_pixels:
        factor = math.sqrt(max_pixels / (width * height))
        width, height = max(1, int(width * factor)), max(1, int(height * factor))
    return width, height


def render(task_id: str, width: int, height: int, image_format: str) -> bytes:
    """A cheap but real image: a tinted gradient, encoded with fast settings."""
    digest = hashlib.sha256(task_id.encode()).digest()
    tint = (digest[0], digest[1], digest[2])
    gradient = Image.linear_gradient("L").resize((width, height), Image.Resampling.NEAREST)
    image = Image.merge(
        "RGB",
        tuple(gradient.point(lambda v, t=t: (v + t) % 256) for t in tint),
    )
    out = io.BytesIO()
    if image_format == "png":
        image.save(out, "PNG", compress_level=1)
    elif image_format == "jpeg":
        image.save(out, "JPEG", quality=80)
    else:
        image.save(out, "WEBP", quality=75, method=0)
    return out.getvalue()


@dataclass
class ImageCache:
    """LRU of rendered files keyed by ``(task_id, index)``, bounded by total bytes."""

    max_bytes: int
    _entries: OrderedDict[tuple[str, int], bytes] = field(default_factory=OrderedDict)
    _bytes: int = 0
    _inflight: dict[tuple[str, int], asyncio.Future[bytes]] = field(default_factory=dict)

    async def get(self, key: tuple[str, int], width: int, height: int, image_format: str) -> bytes:
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            return cached
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            data = await asyncio.to_thread(render, key[0], width, height, image_format)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(data)
        self._store(key, data)
        return data

    def _store(self, key: tuple[str, int], data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        self._entries[key] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


def png_header(width: int, height: int) -> bytes:
    """PNG signature plus a valid IHDR chunk (8-bit RGB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF
    return PNG_SIGNATURE + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", crc)


async def large_file_chunks(header: bytes, filler_bytes: int) -> AsyncIterator[bytes]:
    """The header, then ``filler_bytes`` zero bytes in 64 KiB chunks (never all in memory)."""
    yield header
    chunk = bytes(_CHUNK_BYTES)
    remaining = filler_bytes
    while remaining > 0:
        size = min(remaining, _CHUNK_BYTES)
        yield chunk if size == _CHUNK_BYTES else chunk[:size]
        remaining -= size
