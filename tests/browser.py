"""Test helpers: headless Chromium (find / install / run) and a tiny trained run shared by tests.

``make test`` installs Debian's chromium (apt-get) when /usr/bin/chromium is missing; if that
fails (no package source reachable, no root) it keeps apt-get's output in
``.make/chromium-install.log`` and the browser tests skip, naming the failure. Run outside
``make``, the tests install it themselves when allowed (root with ``CI=true``, or
``DISPART_INSTALL_CHROMIUM=1``); otherwise they skip saying how to get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

INSTALL_LOG = Path(__file__).resolve().parents[1] / ".make" / "chromium-install.log"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_allowed() -> bool:
    """apt-get install is allowed as root with CI=true, or with DISPART_INSTALL_CHROMIUM=1."""
    if os.environ.get("DISPART_INSTALL_CHROMIUM") == "1":
        return True
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    return is_root and os.environ.get("CI", "").lower() == "true"


def make_install_failure(log: Path = INSTALL_LOG) -> str:
    """Last line of apt-get's output if ``make test`` could not install chromium, else ""."""
    if not log.is_file():
        return ""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "apt-get failed without output"


def ensure_chromium(log: Path = INSTALL_LOG) -> tuple[str | None, str]:
    """(binary, "") if Chromium is available (installing it via apt-get when allowed), else
    (None, reason to skip)."""
    found = find_chromium()
    if found:
        return found, ""
    failure = make_install_failure(log)
    if failure:
        return None, (f"chromium is not installed and `make test` could not install it (no "
                      f"package source reachable?): {failure} (full output: {log})")
    if not install_allowed():
        return None, ("chromium is not installed: run the tests with `make test` (installs it), or "
                      "`apt-get install -y chromium`, or set DISPART_INSTALL_CHROMIUM=1 / run as "
                      "root with CI=true to let the test do it")
    if shutil.which("apt-get") is None:
        return None, "chromium is not installed and apt-get is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"could not install chromium ({' '.join(cmd)}): {e}"
        if done.returncode != 0:
            return None, f"could not install chromium ({' '.join(cmd)}): {done.stderr.strip()[-300:]}"
    found = find_chromium()
    return (found, "") if found else (None, "apt-get installed chromium but no binary is on PATH")


def run_chromium(binary: str, page: Path, *extra: str, timeout: float = 120
                 ) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on a local HTML file with a fresh profile and console logging."""
    with tempfile.TemporaryDirectory(prefix="dispart-chromium-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=5000", *extra, page.resolve().as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def console_errors(stderr: str) -> list[str]:
    """Console / script errors Chromium logged for the page (uncaught exceptions, console.error)."""
    bad = []
    for line in stderr.splitlines():
        if "Uncaught" in line or ("CONSOLE" in line and ("ERROR" in line or "error" in line.lower())):
            bad.append(line.strip())
    return bad


# --------------------------------------------------------------------------- tiny run

FAST = ["model.hidden=32", "train.batch_size=64", "train.progress_bar=false", "train.epochs=3",
        "eval.k_max=5", "train.log_every_n_steps=1"]


def tiny_run(base: Path) -> Path:
    """A PVAE run trained for 3 epochs on the embedded sample, built once under ``base`` (pass
    ``tmp_path_factory.getbasetemp()`` so every test module of a session shares it)."""
    from dispart.cli import main

    run = base / "tiny_pvae_run"
    if not (run / "model.safetensors").is_file():
        shutil.rmtree(run, ignore_errors=True)
        assert main(["train", "tests/sample.yaml", "--out", str(run), *FAST]) == 0
    return run
