"""`hubasync download` in a real terminal, driven through tmux.

Opt-in (it watches a screen change over a few seconds, so it is timing-dependent by nature):
``HUBASYNC_TMUX_TESTS=1 pytest tests/test_terminal.py``. Skipped when tmux is not installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hubasync.testing import FakeFile, FakeHub, FakeRepo, Fault

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.skipif(not os.environ.get("HUBASYNC_TMUX_TESTS"),
                       reason="set HUBASYNC_TMUX_TESTS=1 to drive a real terminal"),
]

MiB = 1024 * 1024


class Tmux:
    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", str(self.socket), *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-J", "-t", "t")  # -J: wrapped lines joined

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"the screen never matched; last seen:\n{self.screen()}")


@pytest.fixture
def tmux(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tmux]:
    driver = Tmux(tmp_path_factory.mktemp("tmux") / "socket")  # a private tmux server
    yield driver
    subprocess.run(["tmux", "-S", str(driver.socket), "kill-server"], capture_output=True,
                   check=False, timeout=10)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    repo = FakeRepo("org/term")
    slow = os.urandom(8 * MiB)
    repo.commit({"config.json": b"{}", "slow.bin": FakeFile(slow, lfs=True),
                 **{f"part-{i}.bin": FakeFile(os.urandom(MiB), lfs=True) for i in range(3)}})
    with FakeHub(repos=[repo]).run_in_thread() as fake:  # the CDN names blobs by sha256
        fake.add_fault(Fault.stall(after_bytes=3 * MiB, seconds=3.0, server="cdn",
                                   path_glob=f"*{hashlib.sha256(slow).hexdigest()}", times=1))
        yield fake


def test_bars_draw_update_and_leave_the_summary_and_path(tmux: Tmux, hub: FakeHub,
                                                         tmp_path: Path) -> None:
    command = shlex.join([sys.executable, "-m", "hubasync", "download", "org/term",
                          "--cache-dir", str(tmp_path)])
    env = f"env -u HF_PROGRESS_MODE -u HF_HUB_DISABLE_PROGRESS_BARS HF_ENDPOINT={hub.endpoint}"
    tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30",
         f"cd {shlex.quote(os.getcwd())} && {env} {command}; echo EXIT=$?; sleep 60")
    during = tmux.wait_for(lambda s: "slow.bin" in s and "━" in s)
    assert "org/term@main" in during and "/5 files" in during
    frames = {during}
    while "EXIT=" not in (screen := tmux.screen()):  # the stall lasts 3 s: watch it
        frames.add(screen)
        time.sleep(0.1)
    partial = [f for f in frames if re.search(r"slow\.bin .* \d+% +[\d.]+ MB/8\.4 MB", f)]
    assert len(partial) >= 3, frames  # the file's bar sits part-way and keeps being redrawn
    final = tmux.wait_for(lambda s: "EXIT=" in s)
    lines = [line for line in final.splitlines() if line.strip()]
    assert lines[-1] == "EXIT=0"
    assert lines[-2].startswith(str(tmp_path.resolve()))  # the path, last on stdout
    assert any(line.startswith("✔ org/term@main") for line in lines)
    assert not any("━" in line for line in lines)  # the bars are gone, the summary stays
