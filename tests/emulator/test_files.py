"""Result files: real images with the requested ratio and format; expiry and signatures."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from nanobanana_queue.emulator.constants import SIZES
from nanobanana_queue.emulator.images import pixel_size
from tests.emulator.conftest import AUTH, CREATE, body


def _completed(client, clock, advance_s=1000.0, **fields):
    task_id = client.post(CREATE, json=body(**fields), headers=AUTH).json()["id"]
    clock.advance(advance_s)
    task = client.get(f"/v1/tasks/{task_id}", headers=AUTH).json()
    assert task["status"] == "completed"
    return task


@pytest.mark.parametrize("size", SIZES)
def test_image_has_the_requested_aspect_ratio(make_client, clock, size):
    client = make_client(fixed_duration=1)
    task = _completed(client, clock, size=size, quality="1K")

    response = client.get(task["results"][0])

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    width, height = image.size
    ratio_w, ratio_h = (1, 1) if size == "auto" else map(int, size.split(":"))
    assert width * height <= 65536
    assert abs((width / height) / (ratio_w / ratio_h) - 1) < 0.03


@pytest.mark.parametrize(("image_format", "pil_format", "ext"), [
    ("png", "PNG", "png"), ("jpeg", "JPEG", "jpg"), ("webp", "WEBP", "webp"),
])  # fmt: skip
def test_image_format_matches_option_url_and_content_type(
    make_client, clock, image_format, pil_format, ext
):
    client = make_client(fixed_duration=1, image_format=image_format)
    task = _completed(client, clock, size="3:2")

    url = task["results"][0]
    response = client.get(url)

    assert url.split("?")[0].endswith(f"/0.{ext}")
    assert response.headers["content-type"] == f"image/{image_format}"
    assert Image.open(io.BytesIO(response.content)).format == pil_format


@pytest.mark.parametrize(("quality", "long_side"), [("1K", 1024), ("2K", 2048), ("4K", 4096)])
def test_pixel_size_follows_quality_without_a_cap(quality, long_side):
    assert pixel_size("16:9", quality) == (long_side, round(long_side * 9 / 16))
    assert pixel_size("1:8", quality) == (long_side // 8, long_side)


def test_full_size_1k_image_is_rendered(make_client, clock):
    client = make_client(fixed_duration=1, max_pixels=None)
    task = _completed(client, clock, size="4:3", quality="1K")
    image = Image.open(io.BytesIO(client.get(task["results"][0]).content))
    assert image.size == (1024, 768)


def test_links_expire_after_the_scaled_ttl_with_403(make_client, clock):
    client = make_client(fixed_duration=1, time_scale=0.01, result_ttl=1000)
    task = _completed(client, clock, advance_s=0.02)
    url = task["results"][0]
    clock.advance(9.9)
    assert client.get(url).status_code == 200

    clock.advance(0.2)  # 1000 nominal seconds at scale 0.01, counted from completion

    response = client.get(url)
    assert response.status_code == 403
    assert b"Request has expired" in response.content


def test_tampered_signature_answers_403(make_client, clock):
    client = make_client(fixed_duration=1)
    url = _completed(client, clock)["results"][0]
    assert client.get(url.replace("signature=", "signature=0")).status_code == 403
    assert client.get(url.split("?")[0]).status_code == 403


@pytest.mark.parametrize("path", [
    "/files/task-unified-1-abcdefgh/0.png",
    "/files/{id}/1.png",
    "/files/{id}/0.jpg",
])  # fmt: skip
def test_unknown_file_answers_404(make_client, clock, path):
    client = make_client(fixed_duration=1)
    task = _completed(client, clock)
    assert client.get(path.format(id=task["id"])).status_code == 404


def test_file_of_an_unfinished_task_answers_404(make_client, clock):
    client = make_client(fixed_duration=100)
    task_id = client.post(CREATE, json=body(), headers=AUTH).json()["id"]
    assert client.get(f"/files/{task_id}/0.png").status_code == 404


def test_second_download_comes_from_the_cache(make_client, clock):
    client = make_client(fixed_duration=1)
    url = _completed(client, clock)["results"][0]
    first, second = client.get(url).content, client.get(url).content
    assert first == second
    stats = client.get("/_emulator/stats").json()
    assert stats["file_downloads"] == 2
