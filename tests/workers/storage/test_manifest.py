import json

from nanobanana_queue.workers.jobs.record import JobRecord, StoredObject
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.storage.manifest import (
    MANIFEST_SCHEMA_VERSION,
    build_manifest,
    manifest_key,
    object_key_stem,
    object_metadata,
    prompt_sha256,
)

OBJECTS = [
    StoredObject(key="images/j1/0.png", sha256="a" * 64, size=1234, content_type="image/png"),
    StoredObject(
        key="images/j1/1.jpg", sha256="b" * 64, size=99, content_type="image/jpeg", source_index=1
    ),
]


def record(**overrides) -> JobRecord:
    fields = dict(
        job_id="j1",
        state=JobState.DOWNLOADING,
        request={
            "prompt": "a cat on the moon",
            "size": "1:1",
            "image_urls": ["https://ref.example.com/cat.png?X-Amz-Signature=deadbeef"],
            "callback_url": "https://hooks.example.com/cb?token=s3cret",
        },
        producer="p1",
        evolink_task_id="task-xyz",
        polls=4,
        attempts=1,
        credits_paid=1.6,
        paid_creates=1,
        result_urls=["https://files.evolink.ai/r/0.png?Signature=topsecret&Expires=1"],
        created_at=1000.0,
        state_times={
            "queued": 1000.0,
            "submitting": 1002.5,
            "generating": 1003.0,
            "downloading": 1033.0,
        },
    )
    fields.update(overrides)
    return JobRecord(**fields)


def test_keys_follow_the_documented_layout():
    assert object_key_stem("images", "j1", 2) == "images/j1/2"
    assert manifest_key("images", "j1") == "images/j1/manifest.json"


def test_metadata_holds_ids_and_a_prompt_hash_never_the_prompt():
    prompt = "très long prompt 🐱 " * 200
    metadata = object_metadata(job_id="j1", evolink_task_id="task-xyz", prompt=prompt)

    assert metadata == {
        "job-id": "j1",
        "evolink-task-id": "task-xyz",
        "prompt-sha256": prompt_sha256(prompt),
    }
    assert all(v.isascii() and len(v) <= 64 for v in metadata.values())


def test_prompt_hash_is_the_hex_sha256_of_the_utf8_text():
    assert prompt_sha256("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_manifest_records_the_job_its_timings_and_its_objects():
    manifest = build_manifest(record(), OBJECTS, stored_at=1040.0)

    assert manifest["schema_version"] == MANIFEST_SCHEMA_VERSION == 1
    assert manifest["job_id"] == "j1"
    assert manifest["evolink_task_id"] == "task-xyz"
    assert manifest["producer"] == "p1"
    assert manifest["request"]["prompt"] == "a cat on the moon"
    assert manifest["polls"] == 4
    assert manifest["attempts"] == 1
    assert (manifest["credits_paid"], manifest["paid_creates"]) == (1.6, 1)
    assert manifest["timings"]["state_times"]["generating"] == 1003.0
    assert manifest["timings"]["durations_s"] == {
        "queued_to_submitting": 2.5,
        "generating": 30.0,
        "download": 7.0,
        "enqueue_to_stored": 40.0,
    }
    assert manifest["objects"] == [
        {
            "key": "images/j1/0.png",
            "sha256": "a" * 64,
            "size": 1234,
            "content_type": "image/png",
            "source_index": 0,
        },
        {
            "key": "images/j1/1.jpg",
            "sha256": "b" * 64,
            "size": 99,
            "content_type": "image/jpeg",
            "source_index": 1,
        },
    ]


def test_manifest_never_contains_result_links_or_url_signatures():
    text = json.dumps(build_manifest(record(), OBJECTS, stored_at=1040.0))

    for secret in ("topsecret", "files.evolink.ai", "deadbeef", "s3cret", "Signature"):
        assert secret not in text
    manifest = json.loads(text)
    assert manifest["request"]["image_urls"] == ["https://ref.example.com/cat.png"]
    assert manifest["request"]["callback_url"] == "https://hooks.example.com/cb"


def test_a_recorded_stored_time_wins_and_unknown_spans_are_null():
    rec = record(state_times={"queued": 1000.0, "downloading": 1010.0, "stored": 1012.0})

    durations = build_manifest(rec, [], stored_at=5000.0)["timings"]["durations_s"]

    assert durations == {
        "queued_to_submitting": None,
        "generating": None,
        "download": 2.0,
        "enqueue_to_stored": 12.0,
    }


def test_manifest_is_plain_json():
    manifest = build_manifest(record(), OBJECTS)
    assert json.loads(json.dumps(manifest)) == manifest
