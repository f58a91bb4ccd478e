"""The issue's targets, checked against a results dict, and the results as Markdown tables."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OURS = "runhouse"
FASTAPI = "fastapi_uvicorn"
FLASK = "flask_gunicorn"
STUB_DEFAULT = "default (stream_logs on)"
STUB_ON = "options(stream_logs=True)"
STUB_OFF = "options(stream_logs=False)"

STREAMING_TOLERANCE = 0.05  # "costs nothing": stream-on p50 within 5% of stream-off p50
GROWTH_LIMIT_MB = 2.0  # "no growth": at most 2 MiB over all the calls (about 20 bytes per call)


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    limit: str
    passed: bool


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("inf")


def _per_round(tp: dict[str, Any], other: str) -> str:
    """Ours / other for each round of wrk runs (runs of one round are close together in time)."""
    pairs = zip(tp[OURS]["all_calls_per_s"], tp[other]["all_calls_per_s"], strict=True)
    return ", ".join(f"{a / b:.2f}x" for a, b in pairs)


def targets(r: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    stub = r["latency"]["stub"]
    raw = r["latency"]["raw"]
    p50 = stub[STUB_DEFAULT]["p50_ms"]
    out.append(Target("sequential p50, Python stub, streaming on", f"{p50:.3f} ms", "<= 0.5 ms", p50 <= 0.5))
    ratio = _ratio(raw[OURS]["p50_ms"], raw[FASTAPI]["p50_ms"])
    out.append(
        Target(
            "sequential p50, raw HTTP, ours / FastAPI",
            f"{ratio:.2f}x ({raw[OURS]['p50_ms']:.3f} vs {raw[FASTAPI]['p50_ms']:.3f} ms)",
            "<= 1.00x",
            ratio <= 1.0,
        )
    )
    ratio = _ratio(p50, raw[FASTAPI]["p50_ms"])
    out.append(
        Target(
            "sequential p50, Python stub / FastAPI (raw HTTP)",
            f"{ratio:.2f}x ({p50:.3f} vs {raw[FASTAPI]['p50_ms']:.3f} ms)",
            "<= 1.00x",
            ratio <= 1.0,
        )
    )
    on, off = stub[STUB_ON]["p50_ms"], stub[STUB_OFF]["p50_ms"]
    raw_on, raw_off = (
        r["latency"]["raw_streaming"]["stream_logs=true"]["p50_ms"],
        r["latency"]["raw_streaming"]["stream_logs=false"]["p50_ms"],
    )
    out.append(
        Target(
            "streaming cost when nothing prints (p50 on - off)",
            f"stub {(on - off) * 1e3:+.0f} us ({on:.3f} vs {off:.3f} ms); "
            f"raw {(raw_on - raw_off) * 1e3:+.0f} us ({raw_on:.3f} vs {raw_off:.3f} ms)",
            f"both <= {STREAMING_TOLERANCE:.0%} of off",
            on <= off * (1 + STREAMING_TOLERANCE) and raw_on <= raw_off * (1 + STREAMING_TOLERANCE),
        )
    )
    tp = r["throughput"]
    vs_fastapi = _ratio(tp[OURS]["calls_per_s"], tp[FASTAPI]["calls_per_s"])
    vs_flask = _ratio(tp[OURS]["calls_per_s"], tp[FLASK]["calls_per_s"])
    out.append(
        Target(
            "throughput @64 in flight, ours / FastAPI (best runs)",
            f"{vs_fastapi:.2f}x (per round: {_per_round(tp, FASTAPI)})",
            ">= 2.00x",
            vs_fastapi >= 2.0,
        )
    )
    out.append(
        Target(
            "throughput @64 in flight, ours / Flask+gunicorn (best runs)",
            f"{vs_flask:.2f}x (per round: {_per_round(tp, FLASK)})",
            ">= 3.00x",
            vs_flask >= 3.0,
        )
    )
    start = r["startup"]["median_total_s"]
    out.append(Target("`runhouse start` to first call (median)", f"{start:.2f} s", "<= 1.5 s", start <= 1.5))
    mbps = r["transfer"]["median_mb_per_s"]
    out.append(Target("100 MB numpy round trip (median)", f"{mbps:.0f} MB/s", ">= 300 MB/s", mbps >= 300))
    idle = r["memory"]["idle"]["total_mb"]
    out.append(Target("idle RSS, daemon + default worker", f"{idle:.1f} MiB", "<= 120 MiB", idle <= 120))
    growth = r["memory"]["growth"]
    delta = growth["delta"]["total_mb"]
    out.append(
        Target(
            f"RSS growth over {growth['calls']:,} calls",
            f"{delta:+.2f} MiB",
            f"<= {GROWTH_LIMIT_MB:.0f} MiB",
            delta <= GROWTH_LIMIT_MB,
        )
    )
    return out


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _latency_row(label: str, s: dict[str, Any]) -> str:
    opened = s.get("new_connections")
    return _row(
        label,
        s["p50_ms"],
        s["p90_ms"],
        s["p99_ms"],
        s["calls_per_s"],
        s["n"],
        "-" if opened is None else opened,
    )


def markdown(r: dict[str, Any], checked: list[Target]) -> str:
    """All result tables in Markdown (also what ``run.py`` prints)."""
    m = r["meta"]
    lines = [
        f"Run: {m.get('date')}, mode {m.get('mode')}, {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"runhouse {m['runhouse']} at {m['git_commit']} (+{m['runhouse_files_changed_since_commit']} changed files, "
        f"source sha256 {m['runhouse_source_sha256']}), CPU steal {m.get('cpu_steal_pct')}%, "
        f"load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}, {m.get('wall_s')} s."
        + (" SOURCES CHANGED DURING THE RUN." if "runhouse_source_sha256_end" in m else ""),
        "",
        "### Targets",
        "",
        _row("target", "measured", "limit", "result"),
        _row("---", "---", "---", "---"),
    ]
    lines += [_row(t.name, t.measured, t.limit, "PASS" if t.passed else "MISS") for t in checked]

    lines += [
        "",
        "### Sequential latency (one call in flight)",
        "",
        _row("client -> server", "p50 ms", "p90 ms", "p99 ms", "calls/s", "calls", "new connections"),
        _row("---", "---:", "---:", "---:", "---:", "---:", "---:"),
    ]
    lat = r["latency"]
    for name, s in lat["stub"].items():
        lines.append(_latency_row(f"Python stub `{name}` -> runhouse", s))
    fastapi_p50 = lat["raw"][FASTAPI]["p50_ms"]
    for name, s in lat["raw"].items():
        note = "" if name == FASTAPI else f" ({s['p50_ms'] / fastapi_p50:.2f}x FastAPI p50)"
        lines.append(_latency_row(f"raw HTTP -> {name}{note}", s))
    for name, s in lat.get("raw_streaming", {}).items():
        lines.append(_latency_row(f"raw HTTP -> runhouse, `{name}` in body", s))

    tp = r["throughput"]
    lines += [
        "",
        "### Throughput (wrk -t1 -c64, best of the runs)",
        "",
        _row(
            "server", "calls/s", "ratio ours/this", "p50 ms", "p90 ms", "p99 ms", "all runs calls/s", "errors"
        ),
        _row("---", "---:", "---:", "---:", "---:", "---:", "---", "---"),
    ]
    for name, t in tp.items():
        errors = t["non_2xx"] + sum(t["socket_errors"].values())
        lines.append(
            _row(
                name,
                f"{t['calls_per_s']:.0f}",
                f"{tp[OURS]['calls_per_s'] / t['calls_per_s']:.2f}",
                t["p50_ms"],
                t["p90_ms"],
                t["p99_ms"],
                ", ".join(f"{v:.0f}" for v in t["all_calls_per_s"]),
                errors,
            )
        )

    st, tr, mem = r["startup"], r["transfer"], r["memory"]
    g = mem["growth"]
    lines += [
        "",
        "### Start-up, transfer, memory",
        "",
        _row("measure", "value"),
        _row("---", "---"),
        _row(
            "start to first call, median (CLI / deploy / first call)",
            f"{st['median_total_s']:.3f} s ({st['median_cli_s']:.3f} / {st['median_deploy_s']:.3f} / "
            f"{st['median_first_call_s']:.3f} s)",
        ),
        _row("start to first call, all runs", ", ".join(f"{s:.3f}" for s in st["samples_total_s"]) + " s"),
        _row(
            "100 MB round trip, median / best / cold",
            f"{tr['median_mb_per_s']:.0f} / {tr['best_mb_per_s']:.0f} / {tr['cold_mb_per_s']:.0f} MB/s",
        ),
        *(
            [
                _row(
                    "100 MB round trip without shared memory (through the sockets), median / best / cold",
                    f"{ts['median_mb_per_s']:.0f} / {ts['best_mb_per_s']:.0f} / {ts['cold_mb_per_s']:.0f} MB/s",
                )
            ]
            if (ts := r.get("transfer_sockets"))
            else []
        ),
        _row(
            "idle RSS daemon + worker",
            f"{mem['idle']['daemon_mb']:.1f} + {mem['idle']['worker_mb']:.1f} = "
            f"{mem['idle']['total_mb']:.1f} MiB",
        ),
        _row(
            f"RSS before / after {g['calls']:,} calls (total)",
            f"{g['before']['total_mb']:.1f} / {g['after']['total_mb']:.1f} MiB "
            f"(daemon {g['delta']['daemon_mb']:+.2f}, worker {g['delta']['worker_mb']:+.2f} MiB; "
            f"{g['seconds']:.0f} s)",
        ),
        _row("RSS trace over those calls (MiB)", ", ".join(f"{v:.1f}" for v in g["trace_total_mb"])),
    ]
    return "\n".join(lines)


def write_json(r: dict[str, Any], checked: list[Target], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**r, "targets": [asdict(t) for t in checked]}, indent=2) + "\n")


def side_by_side(runs: list[dict[str, Any]]) -> str:
    """The targets of several saved runs in one table (one measured/result column pair per run)."""
    header = ["target", "limit"]
    for i, run in enumerate(runs, 1):
        header += [f"run {i} ({run['meta'].get('date', '?')[11:16]})", "result"]
    lines = [_row(*header), _row(*["---"] * len(header))]
    checked = [targets(run) for run in runs]
    for row in zip(*checked, strict=True):
        cells: list[Any] = [row[0].name, row[0].limit]
        for target in row:
            cells += [target.measured, "PASS" if target.passed else "MISS"]
        lines.append(_row(*cells))
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bench.report run1.json run2.json ...
    import sys

    print(side_by_side([json.loads(Path(p).read_text()) for p in sys.argv[1:]]))
