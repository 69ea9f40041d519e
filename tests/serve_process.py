"""``dify-bridge serve`` as a real subprocess, for stories about the process itself.

Signals, exit codes, readiness and what the log says are properties of the process, so these
tests start the real entry point (``python -m app.admin.cli``) with a clean environment (no setting
leaks in from the machine, no ``.env`` read unless a test writes one into its working directory)
and read its JSON log lines from stderr.
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
from typing import Any

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
    """One ``dify-bridge`` process; ``lines`` are its stderr lines as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self.port = 0

    @classmethod
    async def start(cls, env: dict[str, str], *args: str, cwd: Path) -> Serve:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.admin.cli",
            *(args or ("serve", "--host", "127.0.0.1", "--port", "0")),
            cwd=str(cwd),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._changed.set()
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

    async def started(self) -> int:
        (rec,) = (await self.wait_event("server.started"))[:1]
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

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)
