"""Files over the peer path between the Python client (written from proto/chat.proto) and a real
`confab chat --json`, both ways; and two `confab chat`s resuming a transfer whose sender was
killed."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from confab_client import Session, fingerprint, pb
from confab_files import receive_files, send_file
from conftest import PASSWORD
from harness import ChatProcess, ServerProcess


def cli_grants(py: Session, cli: ChatProcess) -> Any:
    """Python asks for the CLI's address and the CLI user accepts; returns the grant."""
    py.request_address(cli.user)
    cli.expect("address_request", lambda r: r["from"] == py.username)
    cli.send(f"accept {py.username}")
    cli.expect("answered", lambda a: a["user"] == py.username)
    py.events.expect("address_granted", lambda g: g.user == cli.user)
    grant = py.grant_for(cli.user)
    assert grant is not None
    return grant


def test_python_sends_a_file_to_confab_chat(
    login: Callable[..., Session], chat: Callable[..., ChatProcess], tmp_path: Path
) -> None:
    downloads = tmp_path / "downloads"
    py = login("py")
    cli = chat("cli", "--download-dir", str(downloads))
    grant = cli_grants(py, cli)

    data = os.urandom(200_000)  # four chunks
    result: dict[str, Any] = {}

    def offer() -> None:
        try:
            result["done"] = send_file(
                grant.host, grant.port, grant.public_key, py.peer.keys,
                "py", "cli", "../../../tmp/evil name.bin", data, "py-transfer-1",
            )
        except Exception as e:  # reported by the assertions below
            result["error"] = e

    sender = threading.Thread(target=offer)
    sender.start()
    prompt = cli.expect("file_offer", lambda o: o["from"] == "py")
    assert (prompt["name"], prompt["size"], prompt["resume_from"]) == (
        "evil name.bin", len(data), 0
    )
    assert prompt["fingerprint"] == fingerprint(py.peer.keys.public)
    cli.send("y")
    cli.expect("file_answered", lambda a: a["accept"] is True)
    received = cli.expect("file_received", lambda r: r["from"] == "py")
    sender.join(30)
    assert "error" not in result, result
    answer, ack = result["done"]
    digest = hashlib.sha256(data).hexdigest()
    assert (answer.offset, ack.sha256.hex(), received["sha256"]) == (0, digest, digest)
    assert received["path"] == str(downloads / "evil name.bin")
    assert (downloads / "evil name.bin").read_bytes() == data
    # The offered path led nowhere else: the one copy is the one in the download directory.
    assert list(tmp_path.rglob("evil*")) == [downloads / "evil name.bin"]
    assert not Path("/tmp/evil name.bin").exists()


def test_confab_chat_sends_a_file_to_python(
    login: Callable[..., Session], chat: Callable[..., ChatProcess], tmp_path: Path
) -> None:
    py = login("py")
    files = receive_files(py.peer)
    cli = chat("cli")
    cli.send("getaddress py")
    request = py.events.expect("address_requested", lambda r: getattr(r, "from") == "cli")
    py.respond(request, accept=True)
    cli.expect("address_granted", lambda g: g["user"] == "py")

    path = tmp_path / "from the cli.txt"
    data = os.urandom(150_000)
    path.write_bytes(data)
    cli.send(f"sendfile py {path}")
    offered = cli.expect("file_offered")
    assert (offered["to"], offered["name"], offered["size"]) == ("py", path.name, len(data))
    sent = cli.expect("file_sent", lambda s: s["to"] == "py")
    got = files.files.expect("the CLI's file", lambda f: True)
    assert (got.sender, got.offer.name, got.offer.to, got.data) == ("cli", path.name, "py", data)
    assert sent["sha256"] == hashlib.sha256(data).hexdigest()
    assert sent["resumed_from"] == 0


def test_sendfile_without_an_address_or_file_is_refused(
    login: Callable[..., Session], chat: Callable[..., ChatProcess], tmp_path: Path
) -> None:
    login("py")
    cli = chat("cli")
    cli.send(f"sendfile py {tmp_path}")
    refused = cli.expect("error", lambda e: e["command"] == "sendfile")
    assert "getaddress py" in refused["error"]


def test_a_killed_sender_resumes_where_the_transfer_stopped(
    server: ServerProcess, chat: Callable[..., ChatProcess], tmp_path: Path
) -> None:
    downloads = tmp_path / "downloads"
    bob = chat("bob", "--download-dir", str(downloads))
    # alice is started by hand: she gets killed, which the fixture would count as a failure.
    chat("alice").finish()  # registers alice
    path = tmp_path / "big.bin"
    # Paced to 4 s the first time, so it is killed in the middle however fast the machine is.
    data = os.urandom(1 << 20) * 16
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()

    def alice_with_address(*extra: str) -> ChatProcess:
        alice = ChatProcess(server.url, "alice", PASSWORD, tmp_path, *extra)
        alice.expect("connected")
        alice.send("getaddress bob")
        bob.expect("address_request", lambda r: r["from"] == "alice")
        bob.send("accept alice")
        alice.expect("address_granted", lambda g: g["user"] == "bob")
        return alice

    alice = alice_with_address("--max-file-rate", str(4 << 20))
    alice.send(f"sendfile bob {path}")
    bob.expect("file_offer", lambda o: o["from"] == "alice")
    bob.send("y")
    partway = bob.expect(
        "file_progress", lambda p: p["direction"] == "receive" and 0 < p["bytes"] < len(data),
    )
    alice.proc.send_signal(signal.SIGKILL)
    alice.proc.wait()
    alice.finish()
    failed = bob.expect("file_failed", lambda f: f["user"] == "alice")
    assert "sending the file again resumes it" in failed["error"], failed
    assert not (downloads / "big.bin").exists()

    alice = alice_with_address()
    alice.send(f"sendfile bob {path}")
    again = bob.expect("file_offer", lambda o: o["from"] == "alice")
    assert again["resume_from"] >= partway["bytes"], (again, partway)
    bob.send("accept alice")
    received = bob.expect("file_received", lambda r: r["from"] == "alice", within=120)
    sent = alice.expect("file_sent", within=30)
    assert (received["sha256"], sent["sha256"]) == (digest, digest)
    assert sent["resumed_from"] == again["resume_from"] > 0
    assert (downloads / "big.bin").read_bytes() == data
    assert [p.name for p in downloads.iterdir()] == ["big.bin"], "no .part left"
    assert alice.finish() == 0
