"""Signed-looking result links, as an object store's presigned URLs look.

The signature is a real HMAC over path and expiry, so a tampered link answers 403 the
way a real presigned URL does; the expiry that counts is the one stored on the task.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass, field

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


@dataclass
class LinkSigner:
    """Builds and checks ``/files/{task_id}/{index}.{ext}?expires=..&signature=..``."""

    base_url: str
    image_format: str
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.image_format]

    def path(self, task_id: str, index: int) -> str:
        return f"/files/{task_id}/{index}.{self.extension}"

    def url(self, task_id: str, index: int, expires_at: float) -> str:
        path = self.path(task_id, index)
        expires = math.ceil(expires_at)
        return f"{self.base_url}{path}?expires={expires}&signature={self.sign(path, expires)}"

    def sign(self, path: str, expires: int) -> str:
        message = f"{path}:{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:32]

    def verify(self, path: str, expires: str | None, signature: str | None) -> bool:
        if not expires or not signature or not expires.isdigit():
            return False
        return hmac.compare_digest(self.sign(path, int(expires)), signature)
