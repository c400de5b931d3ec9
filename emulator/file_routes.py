"""``GET /files/{task_id}/{index}.{ext}``: result downloads, like presigned object-store links.

Errors here answer the way an object store does (XML ``<Error>`` bodies): unknown file
404, bad signature or expired link 403.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from nanobanana_queue.emulator.dropping import mark_drop
from nanobanana_queue.emulator.images import large_file_chunks, png_header
from nanobanana_queue.emulator.links import CONTENT_TYPES
from nanobanana_queue.emulator.state import EmulatorState

_PRE = frozenset({"status", "drop_connection", "expire_results", "not_image", "large_file"})
NOT_IMAGE_BODY = b"<!DOCTYPE html><html><body><h1>Access denied</h1></body></html>\n"


def storage_error(status: int, code: str, message: str) -> Response:
    body = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return Response(body.encode(), status, media_type="application/xml")


class FileApi:
    """Serves rendered result images and the file-endpoint faults."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def download(self, request: Request) -> Response:
        response = await self._download(request)
        if response.status_code == 200:
            self.state.stats.file_downloads += 1
        else:
            self.state.stats.files_rejected[str(response.status_code)] += 1
        return response

    async def _download(self, request: Request) -> Response:
        state = self.state
        task_id: str = request.path_params["task_id"]
        name: str = request.path_params["name"]
        task = state.store.get(task_id)
        now = state.clock()
        prompt = task.prompt if task is not None else None
        faults = state.faults
        rule = None
        if faults.rules:
            delay_s = faults.delays("file", task_id=task_id, prompt=prompt)
            if delay_s:
                await asyncio.sleep(delay_s)
            rule = faults.fire("file", _PRE, task_id=task_id, prompt=prompt)
            if rule is not None and rule.action == "drop_connection":
                return mark_drop(request)
            if rule is not None and rule.action == "status":
                assert rule.status is not None
                return storage_error(rule.status, rule.code or "InjectedFault", rule.message or "")
        signer = state.store.signer
        index_text, _, extension = name.partition(".")
        if (
            task is None
            or task.status_at(now)[0] != "completed"
            or index_text != "0"
            or extension != signer.extension
        ):
            return storage_error(404, "NoSuchKey", "The specified key does not exist.")
        query = request.query_params
        if not signer.verify(request.url.path, query.get("expires"), query.get("signature")):
            return storage_error(403, "SignatureDoesNotMatch", "The request signature is invalid.")
        if rule is not None and rule.action == "expire_results":
            task.links_expired = True
        if not task.links_valid_at(now):
            return storage_error(403, "AccessDenied", "Request has expired")
        content_type = CONTENT_TYPES[state.config.image_format]
        if rule is not None and rule.action == "not_image":
            return Response(NOT_IMAGE_BODY, 200, media_type=content_type)
        width, height = state.image_dimensions(task)
        if rule is not None and rule.action == "large_file":
            assert rule.bytes is not None
            header = png_header(width, height)
            headers = {} if rule.chunked else {"content-length": str(len(header) + rule.bytes)}
            return StreamingResponse(
                large_file_chunks(header, rule.bytes), headers=headers, media_type="image/png"
            )
        data = await state.images.get((task_id, 0), width, height, state.config.image_format)
        task.downloads += 1
        state.stats.file_bytes_served += len(data)
        return Response(data, 200, media_type=content_type)
