"""Processes for the gateway benchmark: start pinned to a core, wait until they answer, read
their CPU time and memory from /proc, stop them (and only them)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Service:
    """A server started by the benchmark, pinned to one core, its output in a log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        """The base URL it listens on."""
        return f"http://127.0.0.1:{self.port}"

    def pid(self) -> int:
        """The process that holds the listening socket (the one whose CPU is the server's)."""
        return listening_pid(self.port) or self.process.pid

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM its process group (it was started in its own session), then SIGKILL."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def start(
    name: str,
    argv: Sequence[str],
    *,
    core: int,
    port: int,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
) -> Service:
    """Start `argv` pinned to `core` with `taskset`, in its own session, logging to a file."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["taskset", "-c", str(core), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Service(name=name, port=port, process=process, log=log)


def wait_ready(
    service: Service, probe: tuple[str, str, bytes | None, dict[str, str]], timeout: float = 90
) -> None:
    """Poll `probe` (method, path, body, headers) until it answers 200; raise with the log's
    tail if the process dies or the time runs out."""
    method, path, body, headers = probe
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.name} exited ({service.process.returncode}):\n{tail(service)}"
            )
        try:
            status = _request(service.port, method, path, body, headers)
        except OSError as exc:
            last = str(exc)
        else:
            if status == 200:
                return
            last = f"HTTP {status}"
        time.sleep(0.25)
    raise RuntimeError(f"{service.name} not ready after {timeout:.0f} s ({last}):\n{tail(service)}")


def _request(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def tail(service: Service, lines: int = 30) -> str:
    """The last lines of a service's log."""
    try:
        text = service.log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def listening_pid(port: int) -> int | None:
    """The pid owning the TCP socket listening on 127.0.0.1/0.0.0.0:`port`, from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in inodes:
                        return int(entry.name)
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the command: state is field 3, utime 14 and stime 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of a process."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def wrk(
    url: str,
    body: Path,
    key: str,
    *,
    seconds: float,
    connections: int = 50,
    core: int = 1,
    script: Path,
) -> dict[str, float]:
    """Run wrk -t1 against `url` POSTing `body`; its JSON summary, plus requests/s."""
    argv = [
        "taskset",
        "-c",
        str(core),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
        "--",
        str(body),
        key,
    ]
    done = subprocess.run(argv, capture_output=True, check=True, timeout=seconds + 60)
    summary: dict[str, float] = orjson.loads(done.stdout.decode().strip().splitlines()[-1])
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    summary["errors"] = sum(
        summary[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return summary
