"""Fixtures: a real `confab serve` per test, and Python users logged in to it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from confab_client import Client, PeerListener, Session  # noqa: E402
from harness import ChatProcess, ServerProcess  # noqa: E402

PASSWORD = "correct horse battery"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    # Heartbeats every second exercise the client's heartbeat loop during the test; the session
    # timeout stays generous so a slow machine does not end sessions.
    srv = ServerProcess(
        tmp_path / "data", "--heartbeat-interval", "1s", "--session-timeout", "30s"
    )
    yield srv
    alive = srv.proc.poll() is None
    code = srv.stop()
    assert alive, f"the server died during the test; its log:\n{srv.log()}"
    assert code == 0, f"the server exited with {code} on SIGTERM; its log:\n{srv.log()}"


@pytest.fixture
def login(server: ServerProcess) -> Iterator[Callable[..., Session]]:
    """`login("alice")` registers alice, starts her peer listener, logs in and subscribes
    (waiting for BacklogEnd), and cleans all of it up after the test."""
    opened: list[tuple[Client, Session]] = []

    def make(name: str, register: bool = True, listen: bool = True) -> Session:
        client = Client(server.address)
        if register:
            assert client.register(name, PASSWORD) == name
        listener = PeerListener() if listen else None
        session = client.login(name, PASSWORD, listener)
        assert session.username == name
        session.subscribe().expect("backlog_end")
        opened.append((client, session))
        return session

    yield make
    for client, session in opened:
        session.close()
        if session.listener is not None:
            session.listener.close()
        client.close()


@pytest.fixture
def chat(server: ServerProcess, tmp_path: Path) -> Iterator[Callable[..., ChatProcess]]:
    """`chat("carol", *flags)` registers carol (through the Python client) and runs `confab chat --json`
    as carol, waiting until it is logged in with a live stream. At the end of the test its input
    is closed, which must make it exit 0, or 1 when a command of the test failed (an `error`
    line)."""
    started: list[ChatProcess] = []

    def make(name: str, *extra: str) -> ChatProcess:
        client = Client(server.address)
        try:
            client.register(name, PASSWORD)
        finally:
            client.close()
        proc = ChatProcess(server.url, name, PASSWORD, tmp_path, *extra)
        started.append(proc)
        logged_in = proc.expect("logged_in")
        assert logged_in["user"] == name and logged_in["peer_port"] > 0, logged_in
        proc.expect("connected")
        return proc

    yield make
    for proc in started:
        code = proc.finish()
        expected = 1 if proc.errors else 0
        assert code == expected, (
            f"confab chat as {proc.user} exited with {code} after {proc.errors} error lines:\n"
            f"{proc.stderr()}"
        )
