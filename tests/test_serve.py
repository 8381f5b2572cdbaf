"""`captioner serve`: the HTTP API with FastAPI's TestClient, the micro-batcher, the command's flags.

One app (the shipped model) serves the whole module; tests that need other limits change its
settings with monkeypatch for their own duration.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the 'serve' extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="httpx (FastAPI's TestClient) is not installed")

with warnings.catch_warnings():  # Starlette's notice that it will move from httpx to httpx2
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

from captioner import defaults
from captioner.errors import ArgumentError
from captioner.serve import schemas
from captioner.serve.app import create_app, display_name
from captioner.serve.batching import MicroBatcher, Overloaded
from captioner.serve.settings import ServeSettings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTOS = sorted(EXAMPLES.glob("*.jpg"))


@pytest.fixture(scope="module")
def captioner():
    from captioner.pipeline import Captioner

    return Captioner()


@pytest.fixture(scope="module")
def app(captioner):
    return create_app(captioner, ServeSettings())


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as client:
        yield client


@pytest.fixture
def service(app):
    return app.state.service


def upload(path: Path, field: str = "image", content_type: str = "image/jpeg"):
    return (field, (path.name, path.read_bytes(), content_type))


def jpeg_bytes(size=(64, 48), color=(200, 40, 40), quality=90) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def check_hypotheses(answer: list[dict], expected) -> None:
    assert [h["caption"] for h in answer] == [h.caption for h in expected]
    for got, want in zip(answer, expected):
        assert got["log_prob"] == pytest.approx(want.log_prob, abs=2e-3)
        assert got["score"] == pytest.approx(want.score, abs=2e-3)


# --- captions equal the Python API's --------------------------------------------------------------


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_caption_equals_the_python_api(client, captioner, photo):
    response = client.post("/caption", files=[upload(photo)])
    assert response.status_code == 200, response.text
    body = response.json()
    expected = captioner.caption(photo)
    assert body["caption"] == expected[0].caption
    check_hypotheses(body["captions"], expected)
    assert body["image"] == photo.name and body["beam_size"] == 5 and body["num_captions"] == 1
    assert body["tags"] == [tag.to_json() for tag in expected[0].tags]  # the encoder's ImageNet classes, as the Python API has them
    assert "attention_grid" not in body and "attention" not in body["captions"][0]
    assert set(body["timing_ms"]) == {"decode", "queue", "encode", "search", "total"}
    assert all(value >= 0 for value in body["timing_ms"].values())
    assert body["timing_ms"]["total"] >= body["timing_ms"]["decode"]
    schemas.CaptionResult.model_validate(body)


def test_raw_bytes_and_the_n_best(client, captioner):
    photo = EXAMPLES / "astronaut.jpg"
    response = client.post("/caption?num_captions=3", content=photo.read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    body = response.json()
    check_hypotheses(body["captions"], captioner.caption(photo, num_captions=3))
    assert body["image"] is None and body["num_captions"] == 3 and len(body["captions"]) == 3


def test_search_settings_as_form_fields_and_query(client, captioner):
    photo = EXAMPLES / "chelsea.jpg"
    greedy = client.post("/caption", files=[upload(photo)], data={"beam_size": "1"}).json()
    check_hypotheses(greedy["captions"], captioner.caption(photo, beam_size=1))
    assert greedy["beam_size"] == 1
    wide = client.post("/caption?beam_size=7&num_captions=2", files=[upload(photo)]).json()
    check_hypotheses(wide["captions"], captioner.caption(photo, beam_size=7, num_captions=2))
    # num_captions above the default beam widens the beam, as the CLI does
    assert client.post("/caption?num_captions=6", files=[upload(photo)]).json()["beam_size"] == 6


def test_batch_gives_a_result_or_an_error_per_image(client, captioner):
    files = [
        upload(EXAMPLES / "coffee.jpg", "images"),
        ("images", ("notes.jpg", b"these are not pixels", "image/jpeg")),
        upload(EXAMPLES / "chelsea.jpg", "images"),
        ("images", ("cut.jpg", jpeg_bytes((300, 200))[:400], "image/jpeg")),
    ]
    response = client.post("/caption/batch?num_captions=2", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    schemas.BatchResponse.model_validate(body)
    assert body["captioned"] == 2 and body["failed"] == 2
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert [r["image"] for r in results] == ["coffee.jpg", "notes.jpg", "chelsea.jpg", "cut.jpg"]
    check_hypotheses(results[0]["captions"], captioner.caption(EXAMPLES / "coffee.jpg", num_captions=2))
    check_hypotheses(results[2]["captions"], captioner.caption(EXAMPLES / "chelsea.jpg", num_captions=2))
    assert results[1] == {"index": 1, "image": "notes.jpg", "error": "notes.jpg: not a JPEG, PNG, BMP or WebP image", "status": 400}
    assert results[3]["status"] == 400 and "truncated" in results[3]["error"] and "\n" not in results[3]["error"]


# --- health, model, docs, the page ------------------------------------------------------------------


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    schemas.Health.model_validate(body)
    assert body["status"] == "ok" and body["model"] == defaults.SHIPPED_MODEL
    assert {"queued", "images", "batches", "batch_sizes", "cancelled"} <= set(body["worker"])


def test_model(client, captioner):
    from captioner import __version__

    body = client.get("/model").json()
    schemas.ModelInfo.model_validate(body)
    assert body["model"] == defaults.SHIPPED_MODEL and body["decoder"] == captioner.config.decoder.decoder and body["encoder"] == captioner.config.encoder
    assert body["vocab_size"] == len(captioner.vocab) and body["captioner_version"] == __version__
    attends = captioner.config.decoder.decoder == "attention"
    assert body["attention"] is attends and body["grid_size"] == (9 if attends else None) and body["tags"] is True
    assert body["defaults"] == {"beam_size": 5, "num_captions": 1, "length_penalty": 1.0}
    assert body["limits"]["max_upload_bytes"] == ServeSettings().max_upload_bytes
    assert str(captioner.model_dir.parent) not in json.dumps(body)  # the name, not the server's paths


def test_docs_and_openapi(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = client.get("/openapi.json").json()
    assert {"/caption", "/caption/batch", "/health", "/model"} <= set(spec["paths"])
    body = spec["paths"]["/caption"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/jpeg" in body
    assert {"400", "413", "415", "503"} <= set(spec["paths"]["/caption"]["post"]["responses"])


def test_the_page_and_its_files_are_served_from_the_package_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    for name in ("app.js", "style.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and "content-security-policy" in response.headers
    sources = page.text + client.get("/static/app.js").text + client.get("/static/style.css").text
    assert "http://" not in sources and "https://" not in sources  # no CDN, no web font
    assert client.get("/static/../app.py").status_code == 404


# --- status codes -------------------------------------------------------------------------------------


def bomb_png() -> bytes:
    """A small PNG that would be 121 megapixels decoded: more than MAX_PIXELS."""
    buffer = io.BytesIO()
    Image.new("1", (11000, 11000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("notes.jpg", b"hello, I am text", "not a JPEG, PNG, BMP or WebP image"),
        ("empty.jpg", b"", "empty file"),
        ("cut.jpg", jpeg_bytes((400, 300))[:600], "truncated"),
        ("bomb.png", None, "too large"),
        ("anim.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "not a JPEG, PNG, BMP or WebP image"),
    ],
)
def test_bad_images_are_400_with_one_line(client, name, data, words):
    data = bomb_png() if data is None else data
    response = client.post("/caption", files=[("image", (name, data, "image/jpeg"))])
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith(f"{name}: ") and words in detail and "\n" not in detail


@pytest.mark.parametrize(
    "query, words",
    [
        ("beam_size=0", "beam_size must be at least 1"),
        ("beam_size=eleven", "beam_size must be a whole number"),
        ("beam_size=11", "beam_size must be at most 10"),
        ("num_captions=0", "num_captions must be at least 1"),
        ("beam_size=2&num_captions=3", "num_captions must be between 1 and the beam size (2)"),
        ("attention=perhaps", "attention must be true or false"),
    ],
)
def test_bad_parameters_are_400(client, query, words):
    response = client.post(f"/caption?{query}", files=[upload(EXAMPLES / "coffee.jpg")])
    assert response.status_code == 400 and words in response.json()["detail"]


def test_forms_without_the_image_or_with_two_are_400(client):
    photo = EXAMPLES / "coffee.jpg"
    assert client.post("/caption", files=[upload(photo, "photo")]).status_code == 400
    two = client.post("/caption", files=[upload(photo), upload(photo)])
    assert two.status_code == 400 and "/caption/batch" in two.json()["detail"]
    assert client.post("/caption/batch", data={"beam_size": "3"}, files=[upload(photo, "other")]).status_code == 400
    broken = client.post("/caption", content=b"--xyz\r\nnonsense", headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert broken.status_code == 400
    no_boundary = client.post("/caption", content=b"whatever", headers={"Content-Type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and "boundary" in no_boundary.json()["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "application/octet-stream", "image/gif", "image/svg+xml", None])
def test_wrong_content_types_are_415(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/caption", content=(EXAMPLES / "coffee.jpg").read_bytes(), headers=headers)
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]


def test_the_batch_route_takes_only_forms(client):
    response = client.post("/caption/batch", content=(EXAMPLES / "coffee.jpg").read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 415


def test_uploads_over_the_limit_are_413_by_length_and_by_stream(client, app, monkeypatch):
    monkeypatch.setattr(app.state.service.settings, "max_upload_bytes", 10_000)
    big = (EXAMPLES / "coffee.jpg").read_bytes()
    assert len(big) > 10_000
    declared = client.post("/caption", content=big, headers={"Content-Type": "image/jpeg"})
    assert declared.status_code == 413 and "limit 10000" in declared.json()["detail"]
    assert client.post("/caption", files=[upload(EXAMPLES / "coffee.jpg")]).status_code == 413

    def chunks():  # no Content-Length: sent chunked, counted as it streams in
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = client.post("/caption", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert streamed.status_code == 413 and "more than 10000 bytes" in streamed.json()["detail"]
    small = jpeg_bytes()
    assert client.post("/caption", content=iter([small]), headers={"Content-Type": "image/jpeg"}).status_code == 200


def test_too_many_images_is_413(client, app, monkeypatch):
    monkeypatch.setattr(app.state.service.settings, "max_images", 2)
    files = [("images", (f"{i}.jpg", jpeg_bytes(), "image/jpeg")) for i in range(3)]
    response = client.post("/caption/batch", files=files)
    assert response.status_code == 413 and "limit 2" in response.json()["detail"]


@pytest.fixture
def slow_model(service, monkeypatch):
    """The encoder takes `slow_model.seconds` longer (0.6 s unless changed)."""
    features = service.captioner.features

    def slow(images):
        time.sleep(slow.seconds)
        return features(images)

    slow.seconds = 0.6
    monkeypatch.setattr(service.captioner, "features", slow)
    yield slow
    monkeypatch.undo()
    deadline = time.monotonic() + 10
    while service.batcher.busy_for() and time.monotonic() < deadline:  # let the worker finish what it ran
        time.sleep(0.05)


def test_a_request_over_the_timeout_is_503_and_the_worker_lives_on(client, service, slow_model, monkeypatch, captioner):
    monkeypatch.setattr(service.settings, "timeout_s", 0.25)
    cancelled = service.batcher.stats()["cancelled"]
    photo = EXAMPLES / "coffee.jpg"
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/caption", files=[upload(photo)])
        time.sleep(0.1)  # the first one occupies the worker; the second waits in the queue
        second = pool.submit(client.post, "/caption", files=[upload(photo)])
        responses = [first.result(), second.result()]
    for response in responses:
        assert response.status_code == 503 and "timed out after 0.25 s" in response.json()["detail"]
        assert response.headers["retry-after"] == "1"
    time.sleep(slow_model.seconds)
    # The queued image was dropped, not run, once its request had given up.
    assert service.batcher.stats()["cancelled"] >= cancelled + 1
    monkeypatch.setattr(service.settings, "timeout_s", 30.0)
    slow_model.seconds = 0.0
    again = client.post("/caption", files=[upload(photo)])
    assert again.status_code == 200 and again.json()["caption"] == captioner.caption(photo)[0].caption
    assert client.get("/health").json()["status"] == "ok"


def test_a_full_queue_is_503(client, service, monkeypatch):
    monkeypatch.setattr(service.batcher, "max_queue", 0)
    response = client.post("/caption", files=[upload(EXAMPLES / "coffee.jpg")])
    assert response.status_code == 503 and "too many images waiting" in response.json()["detail"]


def test_a_bug_is_500_and_logged_but_a_user_error_inside_is_400(client, service, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(service.captioner.search, "caption", broken)
    with caplog.at_level(logging.ERROR, logger="captioner.serve"):
        response = client.post("/caption", files=[upload(EXAMPLES / "coffee.jpg")])
    assert response.status_code == 500 and "boom" not in response.text and "bug" in response.json()["detail"]
    records = [r for r in caplog.records if r.name == "captioner.serve" and r.levelno == logging.ERROR]
    assert records and "RuntimeError: boom" in records[-1].getMessage() and records[-1].exc_info

    batch = client.post("/caption/batch", files=[upload(EXAMPLES / "coffee.jpg", "images")])
    assert batch.status_code == 200 and batch.json()["results"][0]["status"] == 500

    def refuses(*args, **kwargs):
        raise ArgumentError("beam size must be at least 1, got 0")

    monkeypatch.setattr(service.captioner.search, "caption", refuses)
    response = client.post("/caption", files=[upload(EXAMPLES / "coffee.jpg")])
    assert response.status_code == 400 and response.json()["detail"] == "beam size must be at least 1, got 0"


def test_hostile_requests_never_get_500(client):
    photo = (EXAMPLES / "coffee.jpg").read_bytes()
    requests = [
        {"content": b"", "headers": {"Content-Type": "image/png"}},
        {"content": photo[:1000], "headers": {"Content-Type": "image/jpeg"}},
        {"content": b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "headers": {"Content-Type": "image/png"}},
        {"content": b"BM" + b"\xff" * 60, "headers": {"Content-Type": "image/bmp"}},
        {"content": b"RIFF\x00\x00\x00\x00WEBPVP8 ", "headers": {"Content-Type": "image/webp"}},
        {"content": b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=b"}},
        {"content": photo, "headers": {"Content-Type": "image/jpeg", "Content-Length": "12abc"}},
        {"files": [("image", ("\x00\n../../etc/passwd", b"x" * 10, "text/plain"))]},
        {"files": [("image", ("big.jpg", b"\xff\xd8\xff" + b"\x00" * 5000, "image/jpeg"))]},
    ]
    for request in requests:
        try:
            response = client.post("/caption", **request)
        except Exception:  # httpx itself may refuse a malformed header before sending it
            continue
        assert 400 <= response.status_code < 500, (request.get("headers"), response.status_code, response.text)
        assert "\n" not in response.json()["detail"]


def test_file_names_are_shown_without_paths_or_control_characters():
    assert display_name("C:\\Users\\me\\photo.jpg") == "photo.jpg"
    assert display_name("../../etc/pass\nwd\x00.jpg") == "passwd.jpg"
    assert display_name("") is None and display_name("dir/") is None
    assert len(display_name("x" * 1000) or "") == 200


def test_nothing_is_written_to_disk_for_an_upload(client, captioner, monkeypatch, tmp_path):
    """A 3 MB upload (Starlette would spool parts over 1 MB to a temporary file) stays in memory."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    assert len(data) > 2 * 2**20
    made = []

    def refuse(name):
        def fail(*args, **kwargs):
            made.append(name)
            raise AssertionError(f"tempfile.{name} called")

        return fail

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refuse(name))
    monkeypatch.chdir(tmp_path)
    response = client.post("/caption/batch", files=[("images", ("noise.jpg", data, "image/jpeg"))] * 2)
    assert response.status_code == 200 and response.json()["captioned"] == 2
    assert client.post("/caption", files=[("image", ("noise.jpg", data, "image/jpeg"))]).status_code == 200
    assert made == [] and list(tmp_path.iterdir()) == []


# --- batching -------------------------------------------------------------------------------------------


def post_together(client, requests: list[dict]) -> list:
    """Sends the requests from one thread each, all at once."""
    barrier = threading.Barrier(len(requests))

    def send(request):
        barrier.wait()
        return client.post(**request)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_concurrent_requests_are_batched(client, service, captioner, monkeypatch):
    monkeypatch.setattr(service.batcher, "max_wait", 0.5)  # wide enough for every request to join
    before = service.batcher.stats()["batch_sizes"]
    photos = PHOTOS * 2
    responses = post_together(client, [{"url": "/caption", "files": [upload(p)]} for p in photos])
    after = service.batcher.stats()["batch_sizes"]
    new = {size: after.get(size, 0) - before.get(size, 0) for size in after if after.get(size, 0) != before.get(size, 0)}
    assert sum(size * runs for size, runs in new.items()) == len(photos)
    assert max(new) > 1 and sum(new.values()) < len(photos), new  # fewer model runs than requests
    for photo, response in zip(photos, responses):
        assert response.status_code == 200
        assert response.json()["caption"] == captioner.caption(photo)[0].caption
    assert max(r.json()["batch_size"] for r in responses) == max(new)


def test_batches_are_grouped_by_search_settings(client, service, captioner, monkeypatch):
    monkeypatch.setattr(service.batcher, "max_wait", 0.5)
    photo = EXAMPLES / "astronaut.jpg"
    settings = [(1, 1), (5, 1), (5, 3), (1, 1), (5, 1), (5, 3)]
    responses = post_together(client, [{"url": f"/caption?beam_size={b}&num_captions={n}", "files": [upload(photo)]} for b, n in settings])
    for (beam, num), response in zip(settings, responses):
        body = response.json()
        check_hypotheses(body["captions"], captioner.caption(photo, beam_size=beam, num_captions=num))
        assert body["batch_size"] <= 2  # only requests with the same settings share a run


def test_max_batch_1_runs_one_request_at_a_time(client, service, monkeypatch):
    monkeypatch.setattr(service.batcher, "max_batch", 1)
    monkeypatch.setattr(service.batcher, "max_wait", 0.5)
    responses = post_together(client, [{"url": "/caption", "files": [upload(p)]} for p in PHOTOS])
    assert all(r.status_code == 200 and r.json()["batch_size"] == 1 for r in responses)


# --- the micro-batcher on its own (no model) ---------------------------------------------------------------


class FakeSearch:
    def __init__(self):
        self.calls: list[tuple[int, int, int]] = []

    def caption(self, features, beam_size, num_captions, length_penalty):
        from captioner.decoding import Hypothesis

        self.calls.append((len(features), beam_size, num_captions))
        if beam_size == 13:
            raise ValueError("unlucky")
        return [[Hypothesis(f"image {int(f)} beam {beam_size}", -1.0, -0.5)] * num_captions for f in features]


class FakeCaptioner:
    def __init__(self, delay=0.0):
        self.search = FakeSearch()
        self.delay = delay

    def features(self, images):
        time.sleep(self.delay)
        return images.reshape(len(images), -1)[:, 0].astype(float)


def test_the_batcher_groups_waits_and_resolves_every_future():
    fake = FakeCaptioner()
    batcher = MicroBatcher(fake, max_batch=4, max_wait_ms=200, max_queue=10)
    batcher.start()
    try:
        keys = [(5, 1), (5, 1), (1, 1), (5, 1), (13, 1), (5, 2)]
        futures = [batcher.submit(np.full((2, 2, 3), i, np.uint8), *key) for i, key in enumerate(keys)]
        results = [f.exception(timeout=5) or f.result() for f in futures]
    finally:
        batcher.stop()
    assert results[0].hypotheses[0].caption == "image 0 beam 5" and results[0].batch_size == 3
    assert results[2].hypotheses[0].caption == "image 2 beam 1" and results[2].batch_size == 1
    assert isinstance(results[4], ValueError)  # a failing group fails only its own futures
    assert len(results[5].hypotheses) == 2
    # first run: images 0-3 (max_batch 4) in two groups; then 4 and 5 alone
    assert fake.search.calls == [(3, 5, 1), (1, 1, 1), (1, 13, 1), (1, 5, 2)]
    assert batcher.stats()["failed_batches"] == 1 and batcher.stats()["images"] == 5


def test_the_batcher_refuses_when_full_and_drops_cancelled_images():
    fake = FakeCaptioner(delay=0.3)
    batcher = MicroBatcher(fake, max_batch=1, max_wait_ms=0, max_queue=2)
    image = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(Overloaded):
        batcher.submit(image, 5, 1)  # not started
    batcher.start()
    try:
        running = batcher.submit(image, 5, 1)
        time.sleep(0.1)  # the worker has taken it
        waiting: list[Future] = [batcher.submit(image, 5, 1), batcher.submit(image, 5, 1)]
        with pytest.raises(Overloaded, match="too many images waiting"):
            batcher.submit(image, 5, 1)
        assert waiting[0].cancel()
        running.result(timeout=5)
        waiting[1].result(timeout=5)
    finally:
        batcher.stop()
    assert len(fake.search.calls) == 2 and batcher.stats()["cancelled"] == 1
    assert not batcher.running


# --- attention models ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attention_client(tmp_path_factory):
    from captioner.artifacts import CaptionerConfig, save_captioner
    from captioner.models.attention import AttentionConfig
    from captioner.models.base import build_decoder
    from captioner.pipeline import Captioner
    from captioner.vocab import Vocabulary

    vocab = Vocabulary.build(["a dog runs on the grass", "a cat sits on a red mat", "two people walk in the snow"], min_count=1)
    config = AttentionConfig(vocab_size=len(vocab), max_length=8, feature_dim=1280, embedding_dim=8, units=8, attention_dim=6, decoder="attention")
    directory = tmp_path_factory.mktemp("attention") / "tiny-attention"
    save_captioner(directory, build_decoder(config), vocab, CaptionerConfig("efficientnet_lite0", config))
    model = Captioner(directory)
    with TestClient(create_app(model, ServeSettings(warm_up=False))) as client:
        yield client, model


def test_attention_maps_only_when_asked(attention_client):
    client, model = attention_client
    info = client.get("/model").json()
    assert info["attention"] is True and info["grid_size"] == 7 and info["decoder"] == "attention" and info["model"] == "tiny-attention"
    photo = EXAMPLES / "chelsea.jpg"
    plain = client.post("/caption?num_captions=2", files=[upload(photo)]).json()
    assert "attention_grid" not in plain and all("attention" not in h for h in plain["captions"])
    body = client.post("/caption?num_captions=2&attention=true", files=[upload(photo)]).json()
    schemas.CaptionResult.model_validate(body)
    assert body["attention_grid"] == 7
    expected = model.caption(photo, num_captions=2)
    for got, want in zip(body["captions"], expected):
        assert got["caption"] == want.caption
        maps = np.array(got["attention"])
        assert maps.shape == (len(want.caption.split()), 49)
        np.testing.assert_allclose(maps.sum(axis=1), 1.0, atol=1e-3)
        np.testing.assert_allclose(maps, want.attention, atol=1e-3)


# --- the command's flags -----------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    from captioner.serve import command

    parser = argparse.ArgumentParser(prog="captioner")
    sub = parser.add_subparsers(dest="command", required=True)
    command.add_parser(sub)
    return parser.parse_args(["serve", *argv])


def test_serve_flags_defaults_and_settings():
    from captioner.serve.command import settings_from_args

    args = parse()
    assert args.host == "127.0.0.1" and args.port == 8000 and args.model is None
    assert settings_from_args(args) == ServeSettings()
    args = parse("--host", "0.0.0.0", "--port", "0", "--max-batch", "1", "--max-upload-mb", "0.5", "--timeout", "2.5", "--no-warm-up")
    settings = settings_from_args(args)
    assert args.host == "0.0.0.0" and args.port == 0
    assert settings.max_batch == 1 and settings.max_upload_bytes == 2**19 and settings.timeout_s == 2.5 and settings.warm_up is False


@pytest.mark.parametrize(
    "argv", [["--port", "70000"], ["--max-batch", "0"], ["--timeout", "0"], ["--timeout", "nan"], ["--max-upload-mb", "-1"], ["--max-wait-ms", "x"]]
)
def test_bad_serve_flags_are_refused_at_parse_time(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        parse(*argv)
    assert stop.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_the_command_module_imports_neither_tensorflow_nor_fastapi():
    code = "import sys, captioner.serve.command; print(sorted(m for m in ('tensorflow', 'fastapi', 'uvicorn', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
