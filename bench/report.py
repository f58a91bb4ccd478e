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


def targets(r: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    stub = r["latency"]["stub"]
    raw = r["latency"]["raw"]
    p50 = stub[STUB_DEFAULT]["p50_ms"]
    out.append(Target("sequential p50, Python stub, streaming on", f"{p50:.3f} ms", "<= 0.5 ms", p50 <= 0.5))
    ratio = _ratio(raw[OURS]["p50_ms"], raw[FASTAPI]["p50_ms"])
    out.append(Target("sequential p50, raw HTTP, ours / FastAPI", f"{ratio:.2f}x "
                      f"({raw[OURS]['p50_ms']:.3f} vs {raw[FASTAPI]['p50_ms']:.3f} ms)", "<= 1.00x", ratio <= 1.0))
    on, off = stub[STUB_ON]["p50_ms"], stub[STUB_OFF]["p50_ms"]
    out.append(Target("streaming cost when nothing prints (p50 on - off)", f"{(on - off) * 1e3:+.0f} us "
                      f"({on:.3f} vs {off:.3f} ms)", f"<= {STREAMING_TOLERANCE:.0%} of off",
                      on <= off * (1 + STREAMING_TOLERANCE)))
    tp = r["throughput"]
    vs_fastapi = _ratio(tp[OURS]["calls_per_s"], tp[FASTAPI]["calls_per_s"])
    vs_flask = _ratio(tp[OURS]["calls_per_s"], tp[FLASK]["calls_per_s"])
    out.append(Target("throughput @64 in flight, ours / FastAPI", f"{vs_fastapi:.2f}x", ">= 2.00x", vs_fastapi >= 2.0))
    out.append(Target("throughput @64 in flight, ours / Flask+gunicorn", f"{vs_flask:.2f}x", ">= 3.00x", vs_flask >= 3.0))
    start = r["startup"]["median_total_s"]
    out.append(Target("`runhouse start` to first call (median)", f"{start:.2f} s", "<= 1.5 s", start <= 1.5))
    mbps = r["transfer"]["median_mb_per_s"]
    out.append(Target("100 MB numpy round trip (median)", f"{mbps:.0f} MB/s", ">= 300 MB/s", mbps >= 300))
    idle = r["memory"]["idle"]["total_mb"]
    out.append(Target("idle RSS, daemon + default worker", f"{idle:.1f} MiB", "<= 120 MiB", idle <= 120))
    growth = r["memory"]["growth"]
    delta = growth["delta"]["total_mb"]
    out.append(Target(f"RSS growth over {growth['calls']:,} calls", f"{delta:+.2f} MiB", f"<= {GROWTH_LIMIT_MB:.0f} MiB",
                      delta <= GROWTH_LIMIT_MB))
    return out


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(r: dict[str, Any], checked: list[Target]) -> str:
    """All result tables in Markdown (also what ``run.py`` prints)."""
    lines = ["### Targets", "", _row("target", "measured", "limit", "result"), _row("---", "---", "---", "---")]
    lines += [_row(t.name, t.measured, t.limit, "PASS" if t.passed else "MISS") for t in checked]

    lines += ["", "### Sequential latency (one call in flight)", "",
              _row("client -> server", "p50 ms", "p90 ms", "p99 ms", "calls/s", "calls"),
              _row("---", "---:", "---:", "---:", "---:", "---:")]
    for name, s in r["latency"]["stub"].items():
        lines.append(_row(f"Python stub `{name}` -> runhouse", s["p50_ms"], s["p90_ms"], s["p99_ms"],
                          s["calls_per_s"], s["n"]))
    fastapi_p50 = r["latency"]["raw"][FASTAPI]["p50_ms"]
    for name, s in r["latency"]["raw"].items():
        note = "" if name == FASTAPI else f" ({s['p50_ms'] / fastapi_p50:.2f}x FastAPI p50)"
        lines.append(_row(f"raw HTTP -> {name}{note}", s["p50_ms"], s["p90_ms"], s["p99_ms"], s["calls_per_s"], s["n"]))

    tp = r["throughput"]
    lines += ["", "### Throughput (wrk -t1 -c64, best of the runs)", "",
              _row("server", "calls/s", "ratio ours/this", "p50 ms", "p90 ms", "p99 ms", "all runs calls/s", "errors"),
              _row("---", "---:", "---:", "---:", "---:", "---:", "---", "---")]
    for name, t in tp.items():
        errors = t["non_2xx"] + sum(t["socket_errors"].values())
        lines.append(_row(name, f"{t['calls_per_s']:.0f}", f"{tp[OURS]['calls_per_s'] / t['calls_per_s']:.2f}",
                          t["p50_ms"], t["p90_ms"], t["p99_ms"],
                          ", ".join(f"{v:.0f}" for v in t["all_calls_per_s"]), errors))

    st, tr, mem = r["startup"], r["transfer"], r["memory"]
    g = mem["growth"]
    lines += ["", "### Start-up, transfer, memory", "",
              _row("measure", "value"), _row("---", "---"),
              _row("start to first call, median (CLI / deploy / first call)",
                   f"{st['median_total_s']:.3f} s ({st['median_cli_s']:.3f} / {st['median_deploy_s']:.3f} / "
                   f"{st['median_first_call_s']:.3f} s)"),
              _row("start to first call, all runs", ", ".join(f"{s:.3f}" for s in st["samples_total_s"]) + " s"),
              _row("100 MB round trip, median / best / cold", f"{tr['median_mb_per_s']:.0f} / {tr['best_mb_per_s']:.0f} / "
                   f"{tr['cold_mb_per_s']:.0f} MB/s"),
              _row("idle RSS daemon + worker", f"{mem['idle']['daemon_mb']:.1f} + {mem['idle']['worker_mb']:.1f} = "
                   f"{mem['idle']['total_mb']:.1f} MiB"),
              _row(f"RSS before / after {g['calls']:,} calls (total)",
                   f"{g['before']['total_mb']:.1f} / {g['after']['total_mb']:.1f} MiB "
                   f"(daemon {g['delta']['daemon_mb']:+.2f}, worker {g['delta']['worker_mb']:+.2f} MiB; "
                   f"{g['seconds']:.0f} s)"),
              _row("RSS trace over those calls (MiB)", ", ".join(f"{v:.1f}" for v in g["trace_total_mb"]))]
    return "\n".join(lines)


def write_json(r: dict[str, Any], checked: list[Target], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**r, "targets": [asdict(t) for t in checked]}, indent=2) + "\n")
