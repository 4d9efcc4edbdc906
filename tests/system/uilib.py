"""Helpers of the dashboard's browser tests: `ferry ui` as a process and
Debian's headless Chromium driven by Debian's python3-selenium through
chromium-driver (scripts/deps.sh installs them).

    ui = FerryUI(ferry_bin, client_config).start()   # ui.url, ui.port, ui.token
    b = browser(tmp_path)                            # a fresh profile
    b.get(ui.url) ... b.quit(); ui.stop()
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)/\?token=([0-9a-f]{64})")


class FerryUI:
    """`ferry --config CONFIG ui --port 0` in the background."""

    def __init__(self, ferry_bin, config, extra=()):
        self.argv = [str(ferry_bin), "--config", str(config), "ui", "--port", "0", *extra]
        self.proc = None
        self.url = self.port = self.token = None
        self.out = []

    def start(self, timeout=20):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.out.append(line)
            m = URL_RE.search(line)
            if m:
                self.url, self.port, self.token = m.group(0), int(m.group(1)), m.group(2)
                return self
        self.stop()
        raise AssertionError(f"ferry ui printed no URL: {''.join(self.out)}")

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def request(self, path, method="GET", headers=None, body=None, token=True):
        """One plain HTTP request -> (status, text). token: send it as a
        bearer token."""
        h = dict(headers or {})
        if token:
            h.setdefault("Authorization", f"Bearer {self.token}")
        req = urllib.request.Request(self.base + path, method=method, headers=h, data=body)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self, timeout=20):
        """SIGTERM, then wait: ferry ui exits 0 once its calls ended."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
            raise AssertionError("ferry ui did not stop within its deadline")
        self.out.append(rest or "")
        rc, self.proc = self.proc.returncode, None
        return rc


def browser(width=1500, height=900):
    """Headless Chromium (a fresh profile, removed at quit) under selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ferry-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={profile}",
              f"--window-size={width},{height}"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    quit_ = drv.quit

    def quit_all():
        try:
            quit_()
        finally:
            shutil.rmtree(profile, ignore_errors=True)
    drv.quit = quit_all
    return drv


def wait_for(pred, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = pred()
        except Exception as e:  # noqa: BLE001 - the page may be mid-update
            v, last = None, e
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last})" if last else ""))
        time.sleep(interval)


def screenshot_dir():
    """Where the tests leave their screenshots ($FERRY_SCREENSHOTS, default
    build/screenshots)."""
    from ferrylib import REPO
    d = os.environ.get("FERRY_SCREENSHOTS", str(REPO / "build" / "screenshots"))
    os.makedirs(d, exist_ok=True)
    return d
