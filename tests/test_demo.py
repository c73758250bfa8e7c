"""The demo page (`python -m ifdd_jax.demo`) on the shared tiny run: what it computes for a video
and a zip of frames, its messages for unreadable uploads, and the page itself driven in a real
browser (Debian's Chromium through Playwright; only 127.0.0.1 is reached): upload a generated mp4,
wait for the result, check the predicted label and the rendered timeline.

Without a browser (or Playwright) the browser test skips saying so; with the CI variable set it
fails instead, so CI cannot pass without running it."""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from data_pipeline.inputs import Source
from ifdd_jax import demo, predict
from tests.test_predict import _clip_folder, _frames_of, _write_video

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def video(run_dir, tmp_path_factory):
    """A 4 s mp4 at 10 fps (the run's synthetic clip five times, padded to 48×64)."""
    frames = np.concatenate([_frames_of(_clip_folder(run_dir))] * 5)
    frames = np.pad(frames, ((0, 0), (8, 8), (16, 16), (0, 0)), mode="edge")
    return _write_video(str(tmp_path_factory.mktemp("demo_video") / "talk.mp4"), frames, fps=10)


def _png(path: str) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100, path


def test_a_video_and_a_zip_of_frames(trained, run_dir, video, tmp_path):
    result = demo.analyse(trained, video, str(tmp_path), window_s=1.0)
    expected = predict.predict_sources(trained, [Source(video, "video")], batch_size=4)
    assert result.prediction == expected["results"][0]["prediction"]
    assert set(result.probabilities) == set(trained.class_names)
    assert "Predicted emotion: " + result.prediction in result.message()
    _png(result.timeline_png)
    _png(result.gradcam_png)

    archive = tmp_path / "frames.zip"
    with zipfile.ZipFile(archive, "w") as z:
        folder = _clip_folder(run_dir)
        for name in sorted(os.listdir(folder)):
            z.write(os.path.join(folder, name), f"clip/{name}")
    result = demo.analyse(trained, str(archive), str(tmp_path), crop_faces=True)
    assert result.prediction in trained.class_names
    # 8 frames at the assumed 25 fps fit in one window of 1 s.
    assert any("one window" in note for note in result.notes)


def test_unreadable_uploads_get_a_clear_message(trained, tmp_path):
    respond = demo.respond(trained, str(tmp_path))
    assert respond(None, False, 1.0)[0] == "Upload a video or a zip of frames first."
    cases = {
        "broken.mp4": (b"not a video", "broken.mp4: cannot open video"),
        "broken.zip": (b"not a zip", "broken.zip: not a readable zip archive"),
        "notes.txt": (b"hello", "notes.txt: not a video"),
    }
    for name, (content, says) in cases.items():
        (tmp_path / name).write_bytes(content)
        message, probabilities, timeline, cams = respond(str(tmp_path / name), False, 1.0)
        assert message.startswith("### Could not read the upload") and says in message, message
        assert probabilities is timeline is cams is None
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.txt", "no frames here")
    assert "holds no video" in respond(str(empty), False, 1.0)[0]


# --- the page in a browser ---------------------------------------------------------------------


def _browser_or_skip() -> None:
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"no browser at {CHROMIUM} (apt-get install chromium chromium-driver)")
    for package in ("playwright", "gradio"):
        try:
            __import__(package)
        except ImportError:
            missing.append(f"{package} is not installed (pip install -e '.[demo]')")
    if missing:
        reason = "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)


def test_a_missing_browser_skips_here_and_fails_in_ci(monkeypatch):
    monkeypatch.setitem(globals(), "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no browser at /nonexistent/chromium"):
        _browser_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI: no browser"):
        _browser_or_skip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(run_dir: str, log_path: str) -> Iterator[str]:
    """The demo on a free localhost port; yields its URL once it answers."""
    port = _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "ifdd_jax.demo", "--workdir", run_dir, "--port", str(port)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            assert process.poll() is None, open(log_path).read()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "the demo did not answer within 180 s"
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _only_localhost(route) -> None:
    if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
        route.continue_()
    else:
        route.abort()


def test_the_page_in_a_real_browser(trained, run_dir, video, tmp_path):
    _browser_or_skip()
    # deferred: playwright is in the optional demo extra (_browser_or_skip checked it)
    from playwright.sync_api import sync_playwright

    expected = predict.predict_sources(trained, [Source(video, "video")], batch_size=4)
    label = expected["results"][0]["prediction"]
    with _serve(run_dir, str(tmp_path / "server.log")) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.route("**/*", _only_localhost)
        page.goto(url)
        page.set_input_files("#upload input[type=file]", video)
        page.wait_for_selector("#upload :text('talk.mp4')")
        page.click("#predict")
        page.wait_for_function(
            "() => document.querySelector('#message')?.innerText.includes('Predicted emotion')",
            timeout=300_000,
        )
        message = page.inner_text("#message")
        page.wait_for_function(
            "() => { const i = document.querySelector('#timeline img');"
            " return i && i.complete && i.naturalWidth > 100; }",
            timeout=60_000,
        )
        headline = page.inner_text("#probabilities").split("\n")[1]  # after the box's title
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert f"Predicted emotion: {label} " in message, message
    assert headline == label
