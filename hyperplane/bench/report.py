"""Benchmark results as ratios, targets, a terminal table, Markdown, JSON and SVG (pure).

The ratio of a workload is always (hyperplane) / (kernel-nat), measured in
the same run; for workloads where lower is better (latency, memory) a ratio
above 1 means Hyperplane is worse.  ``evaluate`` adds the ratios and checks
each of the project's targets; the writers only format.  When the run measured the
dataplane's two walks (``hyperplane``, its own, and ``hyperplane-python``), a workload
has a row for each, and every row names its walk (``[compiled]``, ``[python]``).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

HP, KN, RT, HPY = "hyperplane", "kernel-nat", "routing", "hyperplane-python"

# key -> (description, kind, threshold): kind "ratio>=" compares (a)/(b), "abs<=" compares (a)
TARGETS = {
    "tcp_1_stream": ("bulk TCP, 1 stream >= 0.8x kernel NAT", "ratio>=", 0.8),
    "tcp_4_streams": ("bulk TCP, 4 streams >= 0.8x kernel NAT", "ratio>=", 0.8),
    "udp_64b": ("64-byte packet rate >= 0.5x kernel NAT", "ratio>=", 0.5),
    "ping_p50": ("ping p50 through Hyperplane <= 150 us", "abs<=", 150.0),
    "connections_per_s": ("new connections/s >= 0.3x kernel NAT", "ratio>=", 0.3),
    "bytes_per_session": ("<= 350 bytes per session (at 65,000 sessions)", "abs<=", 350.0),
}
LABELS = {
    "tcp_1_stream": "TCP bulk, 1 stream", "tcp_4_streams": "TCP bulk, 4 streams",
    "udp_64b": "UDP 64-byte packets", "ping_p50": "ping RTT p50", "ping_p99": "ping RTT p99",
    "connections_per_s": "new TCP connections", "bytes_per_session": "memory per session",
}


def _verdict(key: str, a: float, ratio: float | None) -> dict | None:
    if key not in TARGETS:
        return None
    text, kind, threshold = TARGETS[key]
    value = ratio if kind == "ratio>=" else a
    met = value is not None and (value >= threshold if kind == "ratio>=" else
                                 value <= threshold)
    return {"text": text, "threshold": threshold, "kind": kind, "met": met}


def evaluate(results: dict) -> dict:
    """Add ratios and target verdicts to ``results`` (returns it); ``..._python`` for the
    pure-Python walk's path when the run has it."""
    for key, w in results["workloads"].items():
        paths = w["paths"]
        a = paths[HP]["median"]
        b = paths.get(KN, {}).get("median")
        c = paths.get(RT, {}).get("median")
        w["ratio"] = a / b if b else None
        w["ratio_vs_routing"] = a / c if c else None
        verdict = _verdict(key, a, w["ratio"])
        if verdict:
            w["target"] = verdict
        if HPY in paths:
            a = paths[HPY]["median"]
            w["ratio_python"] = a / b if b else None
            verdict = _verdict(key, a, w["ratio_python"])
            if verdict:
                w["target_python"] = verdict
    envs = results["extra"].get("environments")
    if envs:
        uss = (envs.get("uss_per_env_bytes") or {}).get("median",
                                                        envs["memory_per_env_bytes"])
        met = envs["per_second"] >= 100 and uss <= 3 * 2**20 and \
            envs["invocations_per_second"] >= 2000 and \
            envs["enis"] == envs.get("enis_before", envs["enis"])
        envs["target"] = {"text": f"{envs['count']} environments at >= 100/s, <= 3 MiB USS "
                                  "each, >= 2,000 invocations/s, ENI count constant",
                          "met": met}
    return results


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def _spread(summary: dict) -> str:
    med = summary["median"]
    if not med or len(summary["samples"]) < 2:
        return ""
    return f"±{(summary['max'] - summary['min']) / 2 / med * 100:.0f}%"


def walks(results: dict) -> list[tuple[str, str | None, str, str]]:
    """(path, its walk, the ratio's key, the verdict's key) for each Hyperplane path."""
    modes = dict(results["extra"].get("fast_path") or {})
    workers = results["extra"].get("workers") or 1
    if workers > 1:  # a group of workers (settings.dataplane.workers): said in every row
        modes = {path: f"{mode}, {workers} workers" for path, mode in modes.items()}
    out = [(HP, modes.get(HP), "ratio", "target")]
    if HPY in modes:
        out.append((HPY, modes[HPY], "ratio_python", "target_python"))
    return out


def rows(results: dict) -> list[list[str]]:
    table = []
    for key, w in results["workloads"].items():
        p = w["paths"]
        for path, mode, ratio_key, target_key in walks(results):
            if path not in p:
                continue
            verdict = w.get(target_key, {})
            ratio = w.get(ratio_key)
            table.append([
                LABELS.get(key, key) + ("" if w["higher_is_better"] else " (lower is better)")
                + (f" [{mode}]" if mode else ""),
                f"{_fmt(p[path]['median'], w['unit'])} {_spread(p[path])}",
                f"{_fmt(p[KN]['median'], w['unit'])} {_spread(p[KN])}" if KN in p else "-",
                f"{_fmt(p[RT]['median'], w['unit'])} {_spread(p[RT])}" if RT in p else "-",
                _fmt(ratio) + "x" if ratio else "-",
                ("met" if verdict.get("met") else "NOT met") if verdict else "",
            ])
    return table


HEAD = ["workload", "hyperplane (a)", "kernel NAT (b)", "routing (c)", "(a)/(b)", "target"]


def extra_lines(results: dict) -> list[str]:
    out = []
    extra = results["extra"]
    envs = extra.get("environments")
    if envs:
        uss = envs.get("uss_per_env_bytes") or {}
        after = envs.get("uss_after_invocations_bytes") or {}
        big = envs.get("response_2mb_ms") or {}
        out.append(f"environments: {envs['count']} started in {envs['seconds']:.1f} s "
                   f"({envs['per_second']:.0f}/s), USS {uss.get('median', 0) / 2**20:.2f} MiB "
                   f"each ({after.get('median', 0) / 2**20:.2f} after the invocations; "
                   f"MemAvailable {envs['memory_per_env_bytes'] / 2**20:.2f} MiB), "
                   f"{envs['invocations_per_second']:.0f} invocations/s across them, "
                   f"{envs.get('enis_before', '?')} -> {envs['enis']} ENIs, 2 MB response "
                   f"round trip {big.get('median', 0):.0f} ms "
                   f"[target: {'met' if envs['target']['met'] else 'NOT met'}]")
    cold = extra.get("cold_start_ms")
    if cold:
        hp = cold["hyperplane"]
        legacy = cold.get("legacy")
        old = "not measured" if not legacy else (
            f"median {legacy['median']:.1f} ms, p99 {legacy['p99']:.1f} ms "
            f"(ENI create-and-attach {legacy['attach_s']:g} s, profile {legacy['profile']})")
        out.append(f"cold start (hyperplane mode): median {hp['median']:.1f} ms, "
                   f"p99 {hp['p99']:.1f} ms; legacy mode: {old}")
    conc = extra.get("concurrent")
    if conc:
        out.append(f"concurrent: {conc['hyperplane_sessions']} sessions held through one ENI "
                   f"(asked {conc['asked']}); kernel conntrack entries "
                   f"{conc['kernel_entries']}, slab object {conc['kernel_slab_object_bytes']} B, "
                   f"MemAvailable delta {conc['kernel_memavailable_delta_per_entry']:.0f} B/entry")
    invoke = extra.get("api_invoke_ms")
    if invoke:
        out.append("warm invoke: " + ", ".join(
            f"{way} p50 {v['p50']:.1f} ms, p99 {v['p99']:.1f} ms" for way, v in invoke.items()))
    if "ping_lost" in extra:
        out.append(f"ping probes lost: {extra['ping_lost']}")
    return out


def table_text(results: dict) -> str:
    body = [HEAD] + rows(results)
    widths = [max(len(r[i]) for r in body) for i in range(len(HEAD))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [""] + extra_lines(results))


def markdown(results: dict) -> str:
    m = results["machine"]
    load = f", load average at the end {m['load_average']}" if "load_average" in m else ""
    out = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}, "
           f"Python {m['python']}{load}. Plan: {results['plan']}. "
           f"Took {results['seconds']:.0f} s.",
           "", "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    out += ["| " + " | ".join(r) + " |" for r in rows(results)]
    out += [""] + [f"- {line}" for line in extra_lines(results)]
    return "\n".join(out) + "\n"


def svg_chart(results: dict) -> str:
    """A horizontal bar chart of (a)/(b) per workload, with each target marked."""
    items = [(LABELS.get(k, k) + (f" [{mode}]" if mode else ""), w[ratio_key], w.get(target_key))
             for k, w in results["workloads"].items()
             for _path, mode, ratio_key, target_key in walks(results) if w.get(ratio_key)]
    scale_max = max([2.0] + [r for _, r, _ in items])
    width, left, bar_h, gap = 720, 230, 22, 12
    height = 60 + len(items) * (bar_h + gap)
    x = lambda v: left + (width - left - 40) * v / scale_max  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             '<text x="10" y="20" font-size="14">hyperplane / kernel NAT, same run '
             '(higher is better for rates; lower for latency and memory)</text>',
             f'<line x1="{x(1)}" y1="30" x2="{x(1)}" y2="{height - 10}" stroke="#888" '
             'stroke-dasharray="4"/>',
             f'<text x="{x(1) + 3}" y="42" fill="#555">1.0</text>']
    for i, (label, ratio, target) in enumerate(items):
        y = 50 + i * (bar_h + gap)
        color = "#4a90d9" if not target else ("#3a9d5d" if target["met"] else "#d9534f")
        parts.append(f'<text x="10" y="{y + 15}">{escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{x(ratio) - left:.1f}" '
                     f'height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{x(ratio) + 4:.1f}" y="{y + 15}">{ratio:.2f}x</text>')
        if target and target["kind"] == "ratio>=":
            tx = x(target["threshold"])
            parts.append(f'<line x1="{tx:.1f}" y1="{y - 3}" x2="{tx:.1f}" y2="{y + bar_h + 3}" '
                         'stroke="#000" stroke-width="2"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write(results: dict, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {"json": directory / "results.json", "markdown": directory / "report.md",
             "svg": directory / "ratios.svg"}
    files["json"].write_text(json.dumps(results, indent=1))
    files["markdown"].write_text(markdown(results))
    files["svg"].write_text(svg_chart(results))
    return files
