"""The one managed-process lifecycle that ManagedServer and ManagedRouter share (issue 26 item 6):
launched into its own process group, ready when its readiness route answers 200, stopped group-
wide (a grandchild too), a start-up exit or a taken port said in one error with the log's tail.
A real process stands in for vLLM: a small Python HTTP server that forks a child like an engine.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest

from compare.serving.router import ManagedRouter, RouterError
from compare.serving.server import ManagedProcess, ManagedServer, ServerError

SERVE = """
import http.server, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("engine", child.pid, flush=True)

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ready" else 404)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


class Toy(ManagedProcess):
    what = "toy"
    log_name = "toy"
    ready_path = "/ready"
    not_ready = "not ready"
    port_hint = "; pick another"
    poll_s = 0.1
    stop_grace_s = 5.0
    startup_digits = 2
    script: ClassVar[str] = SERVE

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.script, str(self.port)]

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _announce(self) -> str:
        return f"toy on {self.port}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_it_starts_answers_and_stops_with_its_children(tmp_path: Path) -> None:
    said: list[str] = []
    with Toy(port=None, startup_timeout_s=30, progress=said.append, log_dir=tmp_path) as toy:
        assert toy.alive() and toy.startup_s is not None and toy.startup_s == round(toy.startup_s, 2)
        assert toy.log_path == tmp_path / f"toy-{toy.port}.log" and said == [f"toy on {toy.port}"]
        deadline = time.monotonic() + 10
        while "engine" not in toy.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        engine = int(toy.log_path.read_text().split("engine ")[1].split()[0])
        assert _alive(engine)
    assert not toy.alive() and toy.proc is None
    deadline = time.monotonic() + 10
    while _alive(engine) and time.monotonic() < deadline:  # the group, not just the leader
        time.sleep(0.1)
    assert not _alive(engine)


def test_an_exit_during_start_up_is_one_error_with_the_log(tmp_path: Path) -> None:
    class Dies(Toy):
        script = "import sys; print('bad flag --x', flush=True); sys.exit(3)"

    said = r"toy exited with code 3 during start-up; log .*toy-\d+\.log:\n.*bad flag"
    with pytest.raises(ServerError, match=said):
        Dies(port=None, startup_timeout_s=30, progress=None, log_dir=tmp_path).start()


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        toy = Toy(port=port, startup_timeout_s=30, progress=None, log_dir=tmp_path)
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is already in use; pick another"):
            toy.launch()
    assert toy.proc is None and not toy.log_path.exists()


def test_the_server_and_the_router_keep_their_own_words() -> None:
    """What each said before the shared base, kept (messages, readiness route, waits)."""
    assert (ManagedServer.ready_path, ManagedServer.not_ready, ManagedServer.stop_grace_s) == (
        "/health", "not healthy", 20.0)
    assert ManagedServer.note_every_s == 15.0 and ManagedServer.startup_digits is None
    assert (ManagedRouter.ready_path, ManagedRouter.error, ManagedRouter.stop_grace_s) == (
        "/readiness", RouterError, 10.0)
    assert ManagedRouter.poll_s == 0.25 and ManagedRouter.startup_digits == 2
