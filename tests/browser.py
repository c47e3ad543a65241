"""A real browser on the MLflow UI for the tests: the UI as ``nox -s ui`` starts it (on a
free loopback port) and headless Chromium from the system packages (``chromium``, installed
by ``.ci/run``) driven by Playwright (``pip install -e .[dev]``; no browser download)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Screenshots of the browser tests (kept after the run: CI's test artifacts).
ARTIFACTS = REPO / "test-artifacts" / "mlflow-ui"
#: The README's screenshot, rewritten when ``CIRBENCH_UPDATE_SCREENSHOTS=1``.
DOCS = REPO / "docs" / "screenshots"


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def require_browser() -> str:
    """The Chromium executable; a missing browser or Playwright fails under CI (``$CI``:
    ``.ci/run`` installs both) and skips with the reason elsewhere."""
    problem = ""
    path = chromium_path()
    if path is None:
        problem = "no chromium executable (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "playwright not installed (pip install -e .[dev])"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser test: {problem}")
        pytest.skip(f"browser test: {problem}")
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def mlflow_ui(uri: str, log: Path) -> Iterator[str]:
    """The MLflow UI on store ``uri`` (the command of ``nox -s ui``); yields its base URL."""
    from bench.tracking import UI_ENV, ui_command

    port = free_port()
    command = ui_command(uri)
    command[command.index("--port") + 1] = str(port)
    env = {**os.environ, **UI_ENV}
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    with urllib.request.urlopen(base + "/health", timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"MLflow UI did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def browser_page(executable: str) -> Iterator[Any]:
    """A headless Chromium page (1400 x 900)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def close_assistant(page: Any) -> None:
    """Close MLflow 3's assistant side panel (it opens by itself and hides half the page)."""
    new_chat = page.get_by_role("button", name="New Chat").first
    try:
        new_chat.wait_for(timeout=5_000)
    except Exception:  # this MLflow has no assistant panel (or it stayed closed)
        return
    page.get_by_role("button", name="Close").last.click()
    new_chat.wait_for(state="hidden")


def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot into :data:`ARTIFACTS` (and :data:`DOCS` when asked)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("CIRBENCH_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, DOCS / path.name)
    return path
