"""Real confab processes for the interop tests: `confab serve` and `confab chat --json`.

Each process's output is read on a thread into a `Timeline`, so tests wait for lines with a
deadline instead of sleeping.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import IO, Any, Callable, Optional

from confab_client import PATIENCE, REPO, Timeline


def confab_binary() -> Path:
    """The binary under test: $CONFAB_BIN, else the debug build in $CARGO_TARGET_DIR."""
    if "CONFAB_BIN" in os.environ:
        return Path(os.environ["CONFAB_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "confab"


def _pump(stream: IO[str], sink: Callable[[str], None], done: Callable[[], None]) -> None:
    for line in stream:
        sink(line.rstrip("\n"))
    done()


class ServerProcess:
    """`confab serve` on 127.0.0.1:0 with a temporary data dir."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                str(confab_binary()),
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data_dir),
                "--bench-fast-hash",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.lines = Timeline()
        assert self.proc.stdout is not None
        threading.Thread(
            target=_pump,
            args=(self.proc.stdout, self.lines.push, lambda: self.lines.close("the server exited")),
            daemon=True,
        ).start()
        try:
            line = self.lines.expect(
                "the server's `confab listening on ADDR` line",
                lambda l: l.startswith("confab listening on "),
            )
        except AssertionError:
            self.stop()
            raise AssertionError(f"the server did not start; its log:\n{self.log()}") from None
        # host:port, what gRPC clients take as a target.
        self.address: str = line.removeprefix("confab listening on ").strip()
        self.url = f"http://{self.address}"

    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> Optional[int]:
        """SIGTERM, then the exit code (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        self._log.close()
        return self.proc.returncode


class ChatProcess:
    """`confab chat --json` driven through stdin, one command per line; its output is one JSON
    object per line, each with a "type"."""

    def __init__(
        self, server_url: str, user: str, password: str, log_dir: Path, *extra: str
    ) -> None:
        self.user = user
        self.stderr_path = log_dir / f"chat-{user}.stderr"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [
                str(confab_binary()),
                "chat",
                "--server",
                server_url,
                "--user",
                user,
                "--password-stdin",
                "--json",
                # The server sees us on loopback; listen there too, not on every interface.
                "--peer-listen",
                "127.0.0.1:0",
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        self.items = Timeline(describe=json.dumps)
        self.unparsed: list[str] = []
        # `error` lines printed: a script with any exits non-zero.
        self.errors = 0
        assert self.proc.stdout is not None
        threading.Thread(
            target=_pump,
            args=(self.proc.stdout, self._item, lambda: self.items.close("confab chat exited")),
            daemon=True,
        ).start()
        self.send(password)

    def _item(self, line: str) -> None:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            self.unparsed.append(line)
            return
        if item.get("type") == "error":
            self.errors += 1
        self.items.push(item)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(
        self, kind: str, where: Callable[[dict[str, Any]], bool] = lambda _: True,
        within: float = PATIENCE,
    ) -> dict[str, Any]:
        """The first output object with "type" == kind matching `where`."""
        try:
            return self.items.expect(
                f"confab chat's {kind!r} output",
                lambda i: i.get("type") == kind and where(i),
                within,
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\nits stderr:\n{self.stderr()}") from None

    def expect_none_before(
        self,
        kind: str,
        where: Callable[[dict[str, Any]], bool],
        barrier_kind: str,
        barrier_where: Callable[[dict[str, Any]], bool],
    ) -> dict[str, Any]:
        return self.items.expect_none_before(
            f"confab chat's {kind!r} output",
            lambda i: i.get("type") == kind and where(i),
            f"confab chat's {barrier_kind!r} output",
            lambda i: i.get("type") == barrier_kind and barrier_where(i),
        )

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text()

    def finish(self, within: float = PATIENCE) -> int:
        """Closes stdin (end of input: exit 0, or 1 if any command failed) and returns the exit
        code."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"confab chat did not exit within {within}s") from None
        finally:
            self._stderr.close()
