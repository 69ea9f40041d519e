"""``dify-bridge serve`` as a real subprocess, for stories about the process itself and for
stories that need the real process (replicas on one Redis, the Teams emulator) and the soak.

Signals, exit codes, readiness and what the log says are properties of the process, so these
tests start the real entry point (``python -m app.admin.cli``) and read its JSON log lines from
stderr as they arrive (so the pipe never fills and blocks the process). Stories about the process
start it with :func:`clean_env` (no setting leaks in from the machine, no ``.env`` read unless a
test writes one into its working directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx

from app.config.settings import variable_names

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_VARIABLES = frozenset(variable_names())


def clean_env(**settings: str) -> dict[str, str]:
    """The machine's environment without any dify-bridge setting, plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in SETTINGS_VARIABLES
        and k not in ("KUBERNETES_SERVICE_HOST", "DIFY_BRIDGE_ENV_FILE", "MICROSOFT_TOKEN_URL")
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(settings)
    return env


class Serve:
    """One ``dify-bridge`` process; ``lines`` are its stderr lines as they arrive (the last
    ``keep`` of them when set, for processes that run long), also appended to ``log_path``."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        *,
        keep: int | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._keep = keep
        self._log_path = log_path
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self.port = 0

    @classmethod
    async def start(
        cls,
        env: dict[str, str],
        *args: str,
        cwd: str | Path | None = None,
        keep: int | None = None,
        log_path: str | Path | None = None,
        stdout: bool = True,
    ) -> Serve:
        """Start ``args`` (default: ``serve`` on a free port); ``stdout=False`` discards its
        standard output instead of keeping it for the test to read."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.admin.cli",
            *(args or ("serve", "--host", "127.0.0.1", "--port", "0")),
            cwd=None if cwd is None else str(cwd),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc, keep=keep, log_path=log_path)

    @classmethod
    async def serving(
        cls,
        env: dict[str, str],
        *,
        cwd: str | Path | None = None,
        keep: int | None = 2000,
        log_path: str | Path | None = None,
    ) -> Serve:
        """``serve`` on a free port, once it listens (for stories that use the process rather
        than watch it); fails with its log if it does not start."""
        served = await cls.start(env, cwd=cwd, keep=keep, log_path=log_path, stdout=False)
        try:
            await served.started(within=30.0)
        except BaseException:
            await served.kill()
            raise
        return served

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        # A debug aid (a story's log file, SOAK_LOGS): plain appends, flushed per line.
        out: IO[str] | None = (
            open(self._log_path, "a", encoding="utf-8")  # noqa: SIM115, ASYNC230
            if self._log_path
            else None
        )
        try:
            async for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                if self._keep is not None and len(self.lines) > self._keep:
                    del self.lines[: -self._keep]
                if out is not None:
                    out.write(line + "\n")
                    out.flush()
                self._changed.set()
        finally:
            if out is not None:
                out.close()
            self._changed.set()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if rec.get("event") == name:
                        out.append(rec)
        return out

    async def wait_event(self, name: str, count: int = 1, within: float = 20.0) -> list[Any]:
        deadline = time.monotonic() + within
        while len(self.events(name)) < count:
            if self.proc.returncode is not None and self._reader.done():
                raise AssertionError(f"exited {self.proc.returncode} before {name}:\n{self.text}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {count}x {name} within {within} s:\n{self.text}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
        return self.events(name)

    async def started(self, within: float = 20.0) -> int:
        (rec,) = (await self.wait_event("server.started", within=within))[:1]
        self.port = int(rec["port"])
        return self.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.get(self.url + "/readyz")
        return r.status_code, r.json()

    async def ready_becomes(self, status: int, within: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            got, body = await self.readyz()
            if got == status:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz stayed {got} {body}:\n{self.text}")
            await asyncio.sleep(0.1)

    async def signal_and_wait(self, sig: int = signal.SIGTERM, within: float = 10.0) -> float:
        """Send ``sig``; return how long the process took to exit (fails after ``within``)."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"still running {within} s after {sig!r}:\n{self.text}") from None
        await self._reader
        return time.monotonic() - t0

    async def exited(self, within: float = 30.0) -> int:
        code = await asyncio.wait_for(self.proc.wait(), within)
        await self._reader
        return code

    async def stop(self, within: float = 15.0) -> None:
        """End it at a story's teardown: SIGTERM, then SIGKILL after ``within`` seconds."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), within)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)
