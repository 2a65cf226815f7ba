"""Fixtures for the console's browser tests: a real `vigil serve` (the binary named by VIGIL_BIN,
else target/debug/vigil) on an ephemeral loopback port with a known admin token and a temporary
state directory, stopped by PID; Debian's chromium driven by Playwright (viewport 1280x800, UTC,
en-US); axe-core run in the page; screenshots under target/console-screenshots/."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "scripts/browser-deps.sh (apt-get install chromium; pip install -r scripts/requirements-browser.txt)"
TOKEN = "console-test-token"
SHOTS = ROOT / "target" / "console-screenshots"
AXE = (Path(__file__).parent / "axe-4.14.1.min.js").read_text(encoding="utf-8")

try:
    from playwright.sync_api import sync_playwright
except ImportError as error:  # a missing part fails loudly, with what installs it
    raise RuntimeError(f"Playwright is missing ({error}); install it with {INSTALL}") from error


class Gateway:
    """A running gateway: its base URL and admin calls with the token."""

    def __init__(self, process, base, log):
        self.process = process
        self.base = base
        self.log = log

    def call(self, method, path, body=None, token=TOKEN):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def model(self, name):
        status, body = self.call("GET", f"/admin/models/{name}")
        assert status == 200, body
        return body

    def not_champion(self, model):
        """A version of `model` other than its champion."""
        deployment = self.model(model)
        return next(
            v["version"] for v in deployment["versions"] if v["version"] != deployment["champion"]
        )

    def infer(self, model, rows, requests=1):
        """Sends `requests` v2 requests of `rows` to the model's champion."""
        metadata = json.loads(urllib.request.urlopen(f"{self.base}/v2/models/{model}").read())
        tensor = metadata["inputs"][0]
        body = {"inputs": [{"name": tensor["name"], "shape": [len(rows), len(rows[0])],
                            "datatype": tensor["datatype"], "data": [x for row in rows for x in row]}]}
        for _ in range(requests):
            status, answer = self.call("POST", f"/v2/models/{model}/infer", body, token=None)
            assert status == 200, answer


def binary():
    path = Path(os.environ.get("VIGIL_BIN", ROOT / "target" / "debug" / "vigil"))
    if not path.exists():
        raise RuntimeError(f"no vigil binary at {path}: run `cargo build` or set VIGIL_BIN")
    return path


@pytest.fixture
def gateway():
    state = tempfile.mkdtemp(prefix="vigil-console-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["VIGIL_ADMIN_TOKEN"] = TOKEN
    process = subprocess.Popen(
        [str(binary()), "serve", "--models", str(ROOT / "models"), "--state", state,
         "--addr", "127.0.0.1:0", "--grpc-addr", "off", "--log-format", "json",
         "--history-interval-ms", "200", "--drift-interval-secs", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    log = []
    base = None
    deadline = time.monotonic() + 60
    while base is None:
        line = process.stderr.readline()
        if not line:
            raise RuntimeError("vigil stopped before serving:\n" + "".join(log))
        log.append(line)
        entry = json.loads(line)
        if entry.get("fields", {}).get("message") == "serving":
            base = f"http://{entry['fields']['address']}"
        if time.monotonic() > deadline:
            raise RuntimeError("vigil did not serve within 60 s:\n" + "".join(log))
    # Keep draining the log so the gateway never blocks on a full pipe.
    threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()
    try:
        yield Gateway(process, base, log)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing; install it with {INSTALL}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


class Console:
    """A browser page on the console, with what it logged."""

    def __init__(self, page, gateway):
        self.page = page
        self.gateway = gateway
        self.errors = []
        self.failed = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.failed.append(r.url))

    def open(self, view="board", model=None):
        suffix = f"/{model}" if model else ""
        self.page.goto(f"{self.gateway.base}/console/#/{view}{suffix}")

    def sign_in(self, token=TOKEN):
        self.page.get_by_label("Admin token").fill(token)
        self.page.get_by_role("button", name="Use token").click()

    def forget_token_behind_its_back(self):
        """The token leaves sessionStorage (another tab signed out) while the page still shows
        what it loaded: the next change goes out without a token."""
        self.page.evaluate("() => sessionStorage.removeItem('vigil-admin-token')")

    def shot(self, name):
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def axe_violations(self):
        self.page.evaluate(AXE)
        result = self.page.evaluate(
            """() => axe.run(document, {runOnly: {type: 'tag',
                values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"""
        )
        return [
            f"{v['id']}: {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"]
        ]


@pytest.fixture
def console(browser, gateway):
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, timezone_id="UTC", locale="en-US"
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield Console(page, gateway)
    context.close()
