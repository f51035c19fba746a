"""`/metrics` (SPEC §14), scraped from a real `confab serve --metrics-listen` during traffic and
read with the Prometheus project's own text parser, so the exposition is checked as Prometheus
would read it, not as a regex would."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from confab_client import PATIENCE, Client
from harness import ServerProcess

PASSWORD = "correct horse battery"


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    srv = ServerProcess(tmp_path / "data", "--metrics-listen", "127.0.0.1:0")
    line = srv.lines.expect(
        "the `confab metrics on URL` line", lambda l: l.startswith("confab metrics on ")
    )
    yield srv, line.removeprefix("confab metrics on ").strip()
    assert srv.stop() == 0, srv.log()


def scrape(url: str) -> dict[str, float]:
    """Every sample as `name{label="value",…}` → value, labels sorted."""
    with urllib.request.urlopen(url, timeout=PATIENCE) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def families(url: str) -> dict[str, str]:
    with urllib.request.urlopen(url, timeout=PATIENCE) as response:
        text = response.read().decode()
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_metrics_move_with_traffic(metered: tuple[ServerProcess, str]) -> None:
    srv, url = metered
    before = scrape(url)
    assert before["confab_sessions"] == 0
    assert before["confab_logins_total"] == 0

    client = Client(srv.address)
    try:
        for name in ("alice", "bob", "carol", "dave"):
            client.register(name, PASSWORD)
        with pytest.raises(grpc.RpcError) as refused:
            client.login("alice", "not the password")
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Three wrong passwords for dave: two refusals, then a lockout.
        for code in ("UNAUTHENTICATED", "UNAUTHENTICATED", "PERMISSION_DENIED"):
            with pytest.raises(grpc.RpcError) as refused:
                client.login("dave", "a stranger's guess")
            assert refused.value.code().name == code
        alice = client.login("alice", PASSWORD)
        bob = client.login("bob", PASSWORD)
        bob.subscribe().expect("backlog_end")
        # carol never opens a stream: what is sent to her waits in her inbox.
        client.login("carol", PASSWORD)
        alice.send_message("bob", "live one")
        bob.events.expect("message")
        for i in range(3):
            alice.send_message("carol", f"stored {i}")
        after = scrape(url)
    finally:
        client.close()

    assert after["confab_sessions"] == 3
    assert after["confab_users"] == 4
    assert after["confab_logins_total"] == 3
    assert after["confab_login_failures_total"] == 4
    assert after["confab_lockouts_total"] == 1
    assert after['confab_messages_total{status="delivered"}'] == 1
    assert after['confab_messages_total{status="stored"}'] == 3
    assert after["confab_inbox_depth"] == 4, "nobody acknowledged anything"
    assert after["confab_inbox_depth_max"] == 3
    assert after["confab_commit_batches_total"] > before["confab_commit_batches_total"]
    assert after["confab_send_to_commit_seconds_count"] == 4
    assert after["confab_send_to_delivery_seconds_count"] == 1
    assert after['confab_send_to_commit_seconds_bucket{le="+Inf"}'] == 4
    assert after['confab_rpc_calls_total{code="OK",method="confab.v1.Chat/SendMessage"}'] == 4
    assert after['confab_rpc_calls_total{code="OK",method="confab.v1.Auth/Register"}'] == 4
    assert (
        after['confab_rpc_calls_total{code="UNAUTHENTICATED",method="confab.v1.Auth/Login"}']
        == 3
    )
    assert (
        after['confab_rpc_calls_total{code="PERMISSION_DENIED",method="confab.v1.Auth/Login"}']
        == 1
    )
    assert after['confab_rpc_seconds_count{method="confab.v1.Auth/Login"}'] == 7

    # Families with labels appear once they have a sample, so their types are checked last.
    kinds = families(url)
    for name, kind in {
        "confab_sessions": "gauge",
        "confab_messages": "counter",
        "confab_inbox_depth": "gauge",
        "confab_commit_batches": "counter",
        "confab_send_to_commit_seconds": "histogram",
        "confab_send_to_delivery_seconds": "histogram",
        "confab_slow_reader_disconnects": "counter",
        "confab_logins": "counter",
        "confab_login_failures": "counter",
        "confab_lockouts": "counter",
        "confab_rpc_calls": "counter",
        "confab_rpc_seconds": "histogram",
    }.items():
        assert kinds.get(name) == kind, f"{name}: {kinds.get(name)} (all: {kinds})"

def test_only_get_metrics_is_served(metered: tuple[ServerProcess, str]) -> None:
    _, url = metered
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(url.removesuffix("/metrics") + "/other", timeout=PATIENCE)
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as posted:
        urllib.request.urlopen(urllib.request.Request(url, data=b"x"), timeout=PATIENCE)
    assert posted.value.code == 405
