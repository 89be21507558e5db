"""The gateway benchmark: modelyard's gateway side by side with LiteLLM's proxy, in one run.

    .venv/bin/python bench/gateway/run.py [--quick] [--soak | --soak-only] [--no-litellm]
                                          [--capture]

Starts a fast mock upstream (mock_upstream.py) and, against it, the floor (raw_proxy.py: a
bare uvicorn + aiohttp relay, what any gateway on this stack pays), `modelyard serve` with a
one-model system, `modelyard serve` with a two-stage system (a cascade when this checkout
has `type: cascade`, else a fallback chain of two) and LiteLLM's proxy (its own venv,
bench/gateway/.venv-litellm, created on first use). Every server under test is pinned to CPU 0
with taskset; the mock and the load generators share CPU 1. For each variant, in rounds that
interleave the variants (the machine is shared, so a slow minute hits all of them alike):

- requests/s at saturation: wrk -t1 -c50 (post.lua), warm-up then measured seconds;
- CPU time per request of the server process: /proc/<pid>/stat utime+stime over the measured
  window, divided by the requests wrk completed;
- latency at a fixed 200 requests/s with an open-loop generator (openloop.py); added latency =
  latency through the gateway - latency straight to the mock, measured the same way, per round.

With --capture, also the one-model system with `gateway.capture` on (modelyard_capture.yaml),
to price keeping every request's messages and answer. Plus streaming saturation for modelyard's
one-model system and LiteLLM, and with --soak the
gateway's RSS across 1,000,000 requests (soak.py). Prints a table and writes results.json.
Needs wrk (`apt-get install -y wrk`) and `taskset` (util-linux).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import procs
from soak import soak

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CONFIGS = HERE / "configs"
LUA = HERE / "post.lua"
LITELLM_VENV = HERE / ".venv-litellm"
RESULTS = HERE / "results.json"
SERVER_CORE, CLIENT_CORE = 0, 1
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one sentence."},
    {"role": "user", "content": "Say hello to the benchmark."},
]
TARGETS = {
    "rps_ratio_vs_litellm_min": 20.0,
    "cpu_ms_per_request_max": 0.4,
    "added_p50_ms_max": 1.0,
    "added_p99_ms_max": 3.0,
    "rss_growth_pct_max": 5.0,
}


@dataclass(frozen=True)
class Settings:
    """How long each measurement runs."""

    rounds: int
    warmup: float
    measure: float
    rate: float
    latency_warmup: float
    latency_seconds: float
    connections: int = 50


FULL = Settings(rounds=3, warmup=2, measure=8, rate=200, latency_warmup=3, latency_seconds=15)
QUICK = Settings(rounds=1, warmup=1, measure=3, rate=200, latency_warmup=1, latency_seconds=5)


@dataclass
class Variant:
    """One thing under load: a server and the body that names its model."""

    key: str
    label: str
    service: procs.Service
    body: Path
    api_key: str
    stream_body: Path | None = None
    saturation: list[dict[str, Any]] = field(default_factory=list)
    streaming: list[dict[str, Any]] = field(default_factory=list)
    latency: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Where requests go."""
        return self.service.url + "/v1/chat/completions"


def say(text: str) -> None:
    """Progress on stderr, so stdout keeps only the table."""
    print(text, file=sys.stderr, flush=True)


# --- setup ---------------------------------------------------------------------------------


def require_tools() -> None:
    """wrk and taskset must be on PATH; say how to install them if not."""
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(
            f"missing {', '.join(missing)}: install with `apt-get install -y wrk` (wrk) "
            "and `apt-get install -y util-linux` (taskset), then rerun"
        )
    if (os.cpu_count() or 1) < 2:
        sys.exit("this benchmark pins the server to CPU 0 and the load to CPU 1: needs 2 CPUs")


def litellm_python() -> Path:
    """The LiteLLM venv's python, creating the venv from litellm-requirements.txt if needed."""
    python = LITELLM_VENV / "bin" / "python"
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        say(f"creating {LITELLM_VENV.relative_to(REPO)} (pip install litellm[proxy], ~3 min)")
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        requirements = str(HERE / "litellm-requirements.txt")
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--progress-bar",
                "off",
                "-q",
                "-r",
                requirements,
            ],
            check=True,
        )
    return python


def package_version(python: Path, package: str) -> str:
    """A package's version as seen by another interpreter."""
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def modelyard_cli() -> str:
    """The `modelyard` script of the interpreter running this benchmark."""
    script = Path(sys.executable).parent / "modelyard"
    found = str(script) if script.exists() else shutil.which("modelyard")
    if found is None:
        sys.exit("modelyard is not installed in this interpreter: run `make install` first")
    return found


def write_body(path: Path, model: str, *, stream: bool = False) -> Path:
    """A chat request for `model` as a JSON file."""
    body: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": 64}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    path.write_bytes(orjson.dumps(body))
    return path


def two_stage_config(cli: str, env: dict[str, str]) -> tuple[Path, str]:
    """The cascade config when this checkout accepts it, else the fallback chain."""
    cascade = CONFIGS / "modelyard_cascade.yaml"
    check = subprocess.run(
        [cli, "check", str(cascade)], capture_output=True, env={**os.environ, **env}
    )
    if check.returncode == 0:
        return cascade, "cascade"
    return CONFIGS / "modelyard_fallback.yaml", "fallback"


def start_modelyard(
    name: str, cli: str, config: Path, work: Path, mock_url: str
) -> tuple[procs.Service, str]:
    """`modelyard serve` pinned to the server core, with a fresh state dir and one virtual key."""
    import asyncio

    from modelyard.gateway.keys import SqliteKeyStore

    state = work / name
    state.mkdir()
    secret, _ = asyncio.run(SqliteKeyStore(state / "keys.sqlite3").create("bench"))
    port = procs.free_port()
    env = {"MOCK_BASE_URL": mock_url, "BENCH_STATE_DIR": str(state)}
    service = procs.start(
        name,
        [cli, "serve", str(config), "--port", str(port)],
        core=SERVER_CORE,
        port=port,
        log_dir=work,
        env=env,
    )
    return service, secret


def start_litellm(python: Path, work: Path, mock_url: str) -> tuple[procs.Service, str]:
    """LiteLLM's proxy (uvicorn, one worker) pinned to the server core, offline."""
    master = "sk-bench-" + os.urandom(24).hex()
    port = procs.free_port()
    env = {
        "MOCK_BASE_URL": mock_url,
        "LITELLM_MASTER_KEY": master,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    }
    argv = [str(python.parent / "litellm"), "--config", str(CONFIGS / "litellm.yaml")]
    argv += ["--port", str(port), "--host", "127.0.0.1", "--num_workers", "1"]
    service = procs.start("litellm", argv, core=SERVER_CORE, port=port, log_dir=work, env=env)
    return service, master


def ready_probe(body: Path, key: str) -> tuple[str, str, bytes, dict[str, str]]:
    """A real chat request: a server is ready when it answers one."""
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    return ("POST", "/v1/chat/completions", body.read_bytes(), headers)


# --- measuring -----------------------------------------------------------------------------


def saturate(variant: Variant, settings: Settings, *, stream: bool = False) -> dict[str, Any]:
    """wrk at saturation: warm-up, then a measured window with the server's CPU time."""
    body = variant.stream_body if stream else variant.body
    assert body is not None
    pid = variant.service.pid()

    def load(seconds: float) -> dict[str, float]:
        return procs.wrk(
            variant.url,
            body,
            variant.api_key,
            seconds=seconds,
            connections=settings.connections,
            script=LUA,
        )

    load(settings.warmup)
    cpu = procs.cpu_seconds(pid)
    result = load(settings.measure)
    cpu = procs.cpu_seconds(pid) - cpu
    requests = max(1, int(result["requests"]))
    return {
        "rps": round(result["rps"], 1),
        "requests": requests,
        "errors": int(result["errors"]),
        "cpu_seconds": round(cpu, 2),
        "cpu_ms_per_request": round(cpu / requests * 1000, 4),
        "cpu_share": round(cpu / (result["duration_us"] / 1e6), 3),
        "wrk_p50_ms": round(result["latency_p50_us"] / 1000, 2),
        "wrk_p99_ms": round(result["latency_p99_us"] / 1000, 2),
    }


def open_loop(variant: Variant, settings: Settings, rate: float) -> dict[str, Any]:
    """Latency at a fixed rate (openloop.py on the client core), and the server's CPU."""
    pid = variant.service.pid()
    cpu = procs.cpu_seconds(pid)
    argv = ["taskset", "-c", str(CLIENT_CORE), sys.executable, str(HERE / "openloop.py")]
    argv += [variant.url, str(variant.body), "--key", variant.api_key, "--rate", str(rate)]
    argv += ["--seconds", str(settings.latency_seconds), "--warmup", str(settings.latency_warmup)]
    timeout = settings.latency_seconds + settings.latency_warmup + 120
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=timeout)
    cpu = procs.cpu_seconds(pid) - cpu
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    sent = max(1, int(result["sent"]))
    result["cpu_ms_per_request"] = round(cpu / sent * 1000, 4)
    return result


def latency_rate(variant: Variant, settings: Settings) -> float:
    """The fixed rate, unless the variant cannot sustain twice it: then a quarter of what it
    did at saturation (open-loop latency past saturation is only a queue growing)."""
    rps = median(variant.saturation, "rps")
    if rps is None or rps >= 2 * settings.rate:
        return settings.rate
    return max(2.0, float(round(rps / 4)))


def median(runs: list[dict[str, Any]], name: str) -> Any:
    """The median of one figure over rounds (None if absent)."""
    values = [r[name] for r in runs if r.get(name) is not None]
    return round(statistics.median(values), 4) if values else None


# --- the run -------------------------------------------------------------------------------


def measure(variants: list[Variant], settings: Settings) -> None:
    """Interleaved rounds: saturation, streaming saturation, fixed-rate latency."""
    for round_ in range(1, settings.rounds + 1):
        say(f"round {round_}/{settings.rounds}")
        for v in variants:
            v.saturation.append(saturate(v, settings))
            say(f"  {v.label}: {_fmt_sat(v.saturation[-1])}")
        for v in variants:
            if v.stream_body is not None:
                v.streaming.append(saturate(v, settings, stream=True))
                say(f"  {v.label}, stream: {_fmt_sat(v.streaming[-1])}")
        for v in variants:
            rate = latency_rate(v, settings)
            v.latency.append(open_loop(v, settings, rate))
            lat = v.latency[-1]
            say(
                f"  {v.label} @ {rate:g}/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, "
                f"errors {lat['errors']}"
            )


def _fmt_sat(run: dict[str, Any]) -> str:
    return (
        f"{run['rps']:,.0f} req/s, {run['cpu_ms_per_request']:.3f} ms CPU/req, "
        f"CPU share {run['cpu_share']:.2f}, errors {run['errors']}"
    )


def summarise(variants: list[Variant]) -> dict[str, Any]:
    """Medians per variant, added latency per round against the direct mock, and ratios."""
    direct = variants[0]
    out: dict[str, Any] = {}
    for v in variants:
        summary: dict[str, Any] = {
            "label": v.label,
            "rps": median(v.saturation, "rps"),
            "cpu_ms_per_request": median(v.saturation, "cpu_ms_per_request"),
            "cpu_share": median(v.saturation, "cpu_share"),
            "wrk_p50_ms": median(v.saturation, "wrk_p50_ms"),
            "wrk_p99_ms": median(v.saturation, "wrk_p99_ms"),
            "errors": sum(r["errors"] for r in v.saturation),
            "latency_rate": v.latency[0]["rate"] if v.latency else None,
            "latency_p50_ms": median(v.latency, "p50_ms"),
            "latency_p99_ms": median(v.latency, "p99_ms"),
            "latency_cpu_ms_per_request": median(v.latency, "cpu_ms_per_request"),
            "rounds": {"saturation": v.saturation, "latency": v.latency},
        }
        cpu = summary["cpu_ms_per_request"]
        summary["requests_per_cpu_second"] = round(1000 / cpu, 1) if cpu else None
        if v is not direct:
            added = [
                {"p50_ms": g["p50_ms"] - d["p50_ms"], "p99_ms": g["p99_ms"] - d["p99_ms"]}
                for g, d in zip(v.latency, direct.latency, strict=True)
            ]
            summary["added_p50_ms"] = median(added, "p50_ms")
            summary["added_p99_ms"] = median(added, "p99_ms")
        if v.streaming:
            summary["stream"] = {
                "rps": median(v.streaming, "rps"),
                "cpu_ms_per_request": median(v.streaming, "cpu_ms_per_request"),
                "errors": sum(r["errors"] for r in v.streaming),
                "rounds": v.streaming,
            }
        out[v.key] = summary
    return out


def ratios(summary: dict[str, Any]) -> dict[str, Any]:
    """modelyard over LiteLLM: requests/s measured side by side, and per CPU-second."""
    lite = summary.get("litellm")
    if lite is None:
        return {}
    out: dict[str, Any] = {}
    for key in ("single", "two_stage"):
        mine = summary[key]
        out[key] = {
            "rps": round(mine["rps"] / lite["rps"], 1),
            "requests_per_cpu_second": round(
                lite["cpu_ms_per_request"] / mine["cpu_ms_per_request"], 1
            ),
        }
    if "stream" in lite and "stream" in summary["single"]:
        out["single_stream"] = {
            "rps": round(summary["single"]["stream"]["rps"] / lite["stream"]["rps"], 1)
        }
    return out


def verdicts(
    summary: dict[str, Any], ratio: dict[str, Any], soaked: dict[str, Any] | None
) -> dict[str, Any]:
    """Each issue target, met or not, for the one-model and the two-stage system."""
    out: dict[str, Any] = {}
    for key in ("single", "two_stage"):
        mine = summary[key]
        checks = {
            "cpu_ms_per_request": mine["cpu_ms_per_request"] <= TARGETS["cpu_ms_per_request_max"],
            "added_p50_ms": mine["added_p50_ms"] <= TARGETS["added_p50_ms_max"],
            "added_p99_ms": mine["added_p99_ms"] <= TARGETS["added_p99_ms_max"],
        }
        if key in ratio:
            checks["rps_ratio_vs_litellm"] = (
                ratio[key]["rps"] >= TARGETS["rps_ratio_vs_litellm_min"]
            )
        out[key] = checks
    if soaked is not None:
        out["soak_rss_growth"] = soaked["growth_after_warmup_pct"] <= TARGETS["rss_growth_pct_max"]
    return out


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "wrk": wrk_version.split("[")[0].strip(),
        "modelyard_commit": commit,
        "loadavg_start": os.getloadavg(),
    }


def table(summary: dict[str, Any], ratio: dict[str, Any]) -> str:
    """The figures as a plain-text table."""
    rows = [
        (
            "variant",
            "req/s",
            "CPU ms/req",
            "req/CPU-s",
            "lat p50/p99 ms (rate)",
            "added p50/p99 ms",
        )
    ]
    for s in summary.values():
        added = f"{s['added_p50_ms']:.2f} / {s['added_p99_ms']:.2f}" if "added_p50_ms" in s else "-"
        rows.append(
            (
                s["label"],
                f"{s['rps']:,.0f}",
                f"{s['cpu_ms_per_request']:.3f}",
                f"{s['requests_per_cpu_second']:,.0f}",
                f"{s['latency_p50_ms']:.2f} / {s['latency_p99_ms']:.2f} ({s['latency_rate']:g}/s)",
                added,
            )
        )
        if "stream" in s:
            st = s["stream"]
            rows.append(
                (
                    f"  {s['label']}, stream",
                    f"{st['rps']:,.0f}",
                    f"{st['cpu_ms_per_request']:.3f}",
                    f"{1000 / st['cpu_ms_per_request']:,.0f}",
                    "-",
                    "-",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for key, r in ratio.items():
        per_cpu = r.get("requests_per_cpu_second")
        extra = f", per CPU-second {per_cpu}x" if per_cpu else ""
        lines.append(f"modelyard {key} / LiteLLM: req/s {r['rps']}x{extra}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (~1.5 min)")
    parser.add_argument("--soak", action="store_true", help="also the 1,000,000-request soak")
    parser.add_argument("--soak-only", action="store_true", help="only the soak")
    parser.add_argument("--soak-requests", type=int, default=1_000_000)
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM baseline")
    parser.add_argument(
        "--capture", action="store_true", help="also the one-model system with capture on"
    )
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state and logs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    require_tools()
    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = Settings(**{**settings.__dict__, "rounds": args.rounds})
    work = Path(tempfile.mkdtemp(prefix="modelyard-gwbench-"))
    services: list[procs.Service] = []
    try:
        results = run(args, settings, work, services.append)
    finally:
        for service in reversed(services):
            service.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"state and logs kept in {work}")
    previous: dict[str, Any] = {}
    if args.output.exists():
        previous = orjson.loads(args.output.read_bytes())
    if "soak" not in results and "soak" in previous:
        results["soak"] = previous["soak"]  # a comparison run keeps the last soak's figures
    if "variants" not in results and "variants" in previous:
        results = {**previous, "soak": results["soak"]}
    if "soak" in results and "met" in results:
        growth = results["soak"]["growth_after_warmup_pct"]
        results["met"]["soak_rss_growth"] = growth <= TARGETS["rss_growth_pct_max"]
    args.output.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    say(f"wrote {args.output}")


def run(
    args: argparse.Namespace,
    settings: Settings,
    work: Path,
    track: Callable[[procs.Service], None],
) -> dict[str, Any]:
    """Start everything, measure, and return the results (the caller stops the services)."""
    started = time.time()
    info = machine()
    cli = modelyard_cli()
    mock_port = procs.free_port()
    mock = procs.start(
        "mock",
        [sys.executable, str(HERE / "mock_upstream.py"), "--port", str(mock_port)],
        core=CLIENT_CORE,
        port=mock_port,
        log_dir=work,
    )
    track(mock)
    mock_url = mock.url + "/v1"
    direct_body = write_body(work / "direct.json", "mock-model")
    procs.wait_ready(mock, ready_probe(direct_body, "sk-mock"))

    single, single_key = start_modelyard(
        "single", cli, CONFIGS / "modelyard_single.yaml", work, mock_url
    )
    track(single)
    single_body = write_body(work / "single.json", "one")
    results: dict[str, Any] = {
        "when": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "machine": info,
    }
    if args.soak_only:
        procs.wait_ready(single, ready_probe(single_body, single_key))
        results["soak"] = run_soak(single, single_body, single_key, args.soak_requests)
        return results

    floor_port = procs.free_port()
    floor = procs.start(
        "floor",
        [sys.executable, str(HERE / "raw_proxy.py"), mock_url, "--port", str(floor_port)],
        core=SERVER_CORE,
        port=floor_port,
        log_dir=work,
    )
    track(floor)
    two_config, two_kind = two_stage_config(
        cli, {"MOCK_BASE_URL": mock_url, "BENCH_STATE_DIR": str(work)}
    )
    two, two_key = start_modelyard("two_stage", cli, two_config, work, mock_url)
    track(two)
    variants = [
        Variant("direct", "mock upstream, direct", mock, direct_body, "sk-mock"),
        Variant("floor", "raw ASGI proxy (floor)", floor, direct_body, "sk-mock"),
        Variant(
            "single",
            "modelyard, one model",
            single,
            single_body,
            single_key,
            stream_body=write_body(work / "single_stream.json", "one", stream=True),
        ),
        Variant(
            "two_stage",
            f"modelyard, two-stage ({two_kind})",
            two,
            write_body(work / "two.json", "two"),
            two_key,
        ),
    ]
    if args.capture:
        kept, kept_key = start_modelyard(
            "capture", cli, CONFIGS / "modelyard_capture.yaml", work, mock_url
        )
        track(kept)
        variants.append(
            Variant("capture", "modelyard, one model, capture on", kept, single_body, kept_key)
        )
    litellm_version = None
    if not args.no_litellm:
        python = litellm_python()
        litellm_version = package_version(python, "litellm")
        lite, master = start_litellm(python, work, mock_url)
        track(lite)
        variants.append(
            Variant(
                "litellm",
                f"LiteLLM proxy {litellm_version}",
                lite,
                write_body(work / "litellm.json", "mock"),
                master,
                stream_body=write_body(work / "litellm_stream.json", "mock", stream=True),
            )
        )
    for v in variants:
        procs.wait_ready(v.service, ready_probe(v.body, v.api_key), timeout=180)
        say(f"{v.label}: ready on {v.service.url} (pid {v.service.pid()})")
    say("warming up every server (one untimed saturation run each)")
    for v in variants:
        procs.wrk(v.url, v.body, v.api_key, seconds=max(3, settings.warmup), script=LUA)
    measure(variants, settings)
    summary = summarise(variants)
    ratio = ratios(summary)
    soaked = None
    if args.soak:
        soaked = run_soak(single, single_body, single_key, args.soak_requests)
    info["loadavg_end"] = os.getloadavg()
    results |= {
        "seconds": round(time.time() - started),
        "settings": {**settings.__dict__, "server_core": SERVER_CORE, "client_core": CLIENT_CORE},
        "two_stage": two_kind,
        "litellm_version": litellm_version,
        "variants": summary,
        "ratios": ratio,
        "targets": TARGETS,
        "met": verdicts(summary, ratio, soaked),
    }
    if soaked is not None:
        results["soak"] = soaked
    print(table(summary, ratio))
    if soaked is not None:
        print(_fmt_soak(soaked))
    return results


def run_soak(service: procs.Service, body: Path, key: str, total: int) -> dict[str, Any]:
    """The RSS soak on the one-model gateway."""
    say(f"soak: {total:,} requests through {service.name}, RSS sampled every 5 s")
    when = datetime.datetime.now().isoformat(timespec="seconds")
    load = os.getloadavg()
    result = soak(
        service.url + "/v1/chat/completions",
        body,
        key,
        service.pid(),
        script=LUA,
        total=total,
        warmup=min(100_000, total // 10),
        progress=say,
    )
    result = {"when": when, "loadavg_start": load, "loadavg_end": os.getloadavg(), **result}
    print(_fmt_soak(result))
    return result


def _fmt_soak(result: dict[str, Any]) -> str:
    return (
        f"soak: {result['requests']:,} requests ({result['errors']} errors) in "
        f"{result['seconds']:.0f} s; RSS {result['rss_after_warmup_mib']} MiB after warm-up -> "
        f"{result['rss_final_mib']} MiB at the end ({result['growth_after_warmup_pct']:+.2f} %, "
        f"peak {result['peak_growth_after_warmup_pct']:+.2f} %)"
    )


if __name__ == "__main__":
    main()
