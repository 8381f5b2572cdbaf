"""The web page in a real browser: Debian's Chromium, driven by Playwright, against the real server.

The server is `python -m captioner.serve.command` (what `captioner serve` runs: uvicorn on
127.0.0.1 and a free port) in a subprocess. The browser is the system's Chromium, never one
Playwright downloads; the browser tests skip, saying why, only where none is found
(`apt-get install -y chromium`, or set CAPTIONER_CHROMIUM to a Chromium or Chrome binary).
Set CAPTIONER_SCREENSHOTS to a folder to keep the screenshots the tests take.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra (fastapi, uvicorn) is not installed")

import httpx
from playwright.sync_api import expect, sync_playwright

from captioner import defaults

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """$CAPTIONER_CHROMIUM, else Debian's /usr/bin/chromium, else a chromium or chrome on PATH."""
    candidates = [os.environ.get("CAPTIONER_CHROMIUM"), "/usr/bin/chromium"]
    candidates += [shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_server(log: Path, *flags: str, timeout: float = 180.0) -> Server:
    """Starts `python -m captioner.serve.command` on a free port; waits until /health answers."""
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "captioner.serve.command", "--port", str(port), "--no-access-log", *flags], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_server(server)
    raise AssertionError(f"the server did not answer /health within {timeout:g} s:\n{server.output()}")


def stop_server(server: Server) -> int:
    """Ctrl-C, as a user would; returns the exit code."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
    return server.process.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("server") / "server.log")
    yield server
    code = stop_server(server)
    assert code == 130, f"the server exited with {code} on Ctrl-C (expected 130, 'interrupted'):\n{server.output()}"


@pytest.fixture(scope="module")
def captioner():
    from captioner.pipeline import Captioner

    return Captioner()


@pytest.fixture(scope="module")
def browser():
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium found: install Debian's (apt-get install -y chromium) or set CAPTIONER_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("CAPTIONER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Watched:
    """A page and everything it asked for or complained about."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport={"width": 1100, "height": 900})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.goto(url)
        expect(self.page.locator("#model-info")).to_contain_text("model ", timeout=30_000)

    def outside(self, base: str) -> list[str]:
        return [url for url in self.requests if not url.startswith((base + "/", "blob:", "data:"))]


def test_the_server_answers_on_loopback_and_stops_on_ctrl_c(server):
    assert server.url.startswith("http://127.0.0.1:")
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["model"] == defaults.SHIPPED_MODEL
    listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True) if shutil.which("ss") else None
    if listening is not None and listening.returncode == 0:
        port = server.url.rsplit(":", 1)[1]
        bound = [line.split()[3] for line in listening.stdout.splitlines() if line.split()[3].endswith(f":{port}")]
        assert bound == [f"127.0.0.1:{port}"]


def test_the_page_captions_an_uploaded_photo_as_the_python_api_does(server, browser, captioner, screenshots):
    photo = EXAMPLES / "coffee.jpg"
    watched = Watched(browser, server.url)
    page = watched.page
    assert defaults.SHIPPED_MODEL in page.text_content("#model-info")
    page.set_input_files("#file", str(photo))
    page.wait_for_selector(".result[data-state=done]", timeout=60_000)
    expected = captioner.caption(photo, num_captions=3)
    assert page.text_content(".result .caption").strip() == expected[0].caption
    shown = page.locator(".result .nbest li")
    assert shown.count() == 3
    for index, hypothesis in enumerate(expected):
        text = shown.nth(index).text_content()
        assert hypothesis.caption in text and f"{hypothesis.score:.2f}".replace("-", "\u2212") in text
    chips = page.locator(".result .tags li")  # the encoder's ImageNet classes with their probabilities
    assert chips.count() == len(expected[0].tags) and chips.nth(0).text_content().startswith(expected[0].tags[0].label)
    assert page.text_content(".result .name") == "coffee.jpg"
    page.screenshot(path=str(screenshots / "serve_page.png"), full_page=True)
    assert watched.outside(server.url) == [], "the page asked another server for something"
    assert watched.errors == []
    page.close()


def test_the_openapi_docs_render_without_the_internet(server, browser):
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{server.url}/docs")
    expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_text_contents()
    assert "/caption" in paths and "/caption/batch" in paths
    assert [url for url in requests if not url.startswith((server.url + "/", "data:"))] == []
    page.close()


def test_several_photos_at_once_and_a_file_that_is_no_image(server, browser, captioner, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("not a photo")
    photos = [EXAMPLES / "astronaut.jpg", EXAMPLES / "chelsea.jpg", fake]
    watched = Watched(browser, server.url)
    page = watched.page
    page.set_input_files("#file", [str(p) for p in photos])
    expect(page.locator(".result[data-state=pending]")).to_have_count(0, timeout=60_000)
    items = page.locator(".result")
    assert items.count() == 3
    for index, photo in enumerate(photos[:2]):
        assert items.nth(index).get_attribute("data-state") == "done"
        assert items.nth(index).locator(".caption").text_content().strip() == captioner.caption(photo)[0].caption
    assert items.nth(2).get_attribute("data-state") == "error"
    assert items.nth(2).locator(".error").text_content() == "notes.jpg: not a JPEG, PNG, BMP or WebP image"
    assert watched.outside(server.url) == []
    page.close()


@pytest.fixture(scope="module")
def attention_server(tmp_path_factory):
    """A server of a tiny attention model: an untrained decoder over the real Lite0 encoder (the maps, not the words, are the point)."""
    from captioner.artifacts import CaptionerConfig, save_captioner
    from captioner.models.attention import AttentionConfig
    from captioner.models.base import build_decoder
    from captioner.vocab import Vocabulary

    vocab = Vocabulary.build(["a dog runs on the grass", "a cat sits on a red mat", "two people walk in the snow"], min_count=1)
    config = AttentionConfig(vocab_size=len(vocab), max_length=8, feature_dim=1280, embedding_dim=8, units=8, attention_dim=6, decoder="attention")
    folder = tmp_path_factory.mktemp("attention")
    save_captioner(folder / "tiny-attention", build_decoder(config), vocab, CaptionerConfig("efficientnet_lite0", config))
    server = start_server(folder / "server.log", "--model", str(folder / "tiny-attention"))
    yield server
    assert stop_server(server) == 130, server.output()


def test_attention_heat_maps_follow_the_pointer(attention_server, browser, screenshots):
    watched = Watched(browser, attention_server.url)
    page = watched.page
    page.set_input_files("#file", str(EXAMPLES / "chelsea.jpg"))
    page.wait_for_selector(".result[data-state=done]", timeout=60_000)
    words = page.locator(".result .caption .word")
    assert words.count() >= 1
    assert " ".join(words.all_text_contents()) == page.text_content(".result .caption").strip()
    canvas = page.locator(".result canvas.heat")
    assert "visible" not in (canvas.get_attribute("class") or "")
    words.first.hover()
    page.wait_for_selector(".result canvas.heat.visible")
    drawn = page.evaluate(
        """() => {
            const canvas = document.querySelector('.result canvas.heat');
            const image = document.querySelector('.result img');
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let covered = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) covered += 1;
            return {covered, pixels: data.length / 4, width: canvas.clientWidth, imageWidth: image.clientWidth,
                    height: canvas.clientHeight, imageHeight: image.clientHeight};
        }"""
    )
    assert drawn["covered"] > 0.5 * drawn["pixels"]  # a shade over the picture, lighter where the word looked
    assert (drawn["width"], drawn["height"]) == (drawn["imageWidth"], drawn["imageHeight"])
    page.screenshot(path=str(screenshots / "serve_attention.png"), full_page=True)
    page.mouse.move(5, 5)  # leaving the word hides the map again
    page.wait_for_selector(".result canvas.heat:not(.visible)", state="attached")
    words.first.click()  # a click pins it
    page.mouse.move(5, 5)
    assert "visible" in (canvas.get_attribute("class") or "")
    assert watched.outside(attention_server.url) == [] and watched.errors == []
    page.close()
