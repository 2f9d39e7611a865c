"""Turns the run records of one session into figures (min / median / max over
rounds), ratios taken round by round, the issue's targets, a Markdown summary and
a PNG chart of the latency distributions."""

import statistics

# Figures kept for every (shape, target) of a load run, with their units.
METRICS = [
    ("rps", "req/s"),
    ("commands_per_s", "cmd/s"),
    ("p50_us", "µs"),
    ("p99_us", "µs"),
    ("cpu_us_per_req", "µs CPU/req"),
    ("redis_cpu_us_per_req", "µs Redis CPU/req"),
    ("errors", "errors"),
    ("foreign_server_cpu_pct", "% server CPU used by others"),
    ("foreign_load_cpu_pct", "% load CPU used by others"),
    ("generator_cpu_pct", "% load CPU used by the generator"),
]
MEMORY_METRICS = [
    ("idle_hwm_mb", "MB"),
    ("held_hwm_mb", "MB"),
    ("held_rss_mb", "MB"),
    ("held_connections", "connections"),
]


def _get(rounds, rnd, shape, target, metric):
    record = rounds.get(rnd, {}).get((shape, target))
    return None if record is None else record.get(metric)


def _div(a, b):
    return None if a is None or not b else a / b


def _sub(a, b):
    return None if a is None or b is None else a - b


def ratio_definitions(rates):
    """(key, description, unit, fn(rounds, rnd))."""
    g = _get
    out = [
        ("get_json.restash_vs_webdis", "GET (restash JSON POST / vs webdis GET /GET/key), req/s",
         "×", lambda r, n: _div(g(r, n, "get_json", "restash", "rps"),
                                g(r, n, "get_json", "webdis", "rps"))),
        ("get_json.restash_vs_redis_c50", "GET restash JSON req/s vs redis-benchmark -c 50 -P 1 ops/s",
         "×", lambda r, n: _div(g(r, n, "get_json", "restash", "rps"),
                                g(r, n, "get_json", "redis", "rps"))),
        ("get_path.restash_vs_webdis", "GET /get/key, restash vs webdis, req/s",
         "×", lambda r, n: _div(g(r, n, "get_path", "restash", "rps"),
                                g(r, n, "get_path", "webdis", "rps"))),
        ("set.restash_vs_webdis", "SET (restash JSON vs webdis POST / form), req/s",
         "×", lambda r, n: _div(g(r, n, "set", "restash", "rps"),
                                g(r, n, "set", "webdis", "rps"))),
        ("pipeline10.restash_vs_redis_p16", "/pipeline ×10 cmd/s vs redis-benchmark -P 16 ops/s",
         "×", lambda r, n: _div(g(r, n, "pipeline10", "restash", "commands_per_s"),
                                g(r, n, "pipeline_p16", "redis", "rps"))),
        ("pipeline100.restash_vs_redis_p16", "/pipeline ×100 cmd/s vs redis-benchmark -P 16 ops/s",
         "×", lambda r, n: _div(g(r, n, "pipeline100", "restash", "commands_per_s"),
                                g(r, n, "pipeline_p16", "redis", "rps"))),
        ("get_json.cpu_restash_vs_webdis", "CPU per GET, restash / webdis",
         "×", lambda r, n: _div(g(r, n, "get_json", "restash", "cpu_us_per_req"),
                                g(r, n, "get_json", "webdis", "cpu_us_per_req"))),
        ("get_json.redis_cpu_restash_vs_direct",
         "Redis CPU per GET: behind restash / under redis-benchmark -P 1",
         "×", lambda r, n: _div(g(r, n, "get_json", "restash", "redis_cpu_us_per_req"),
                                g(r, n, "get_json", "redis", "cpu_us_per_req"))),
        ("unloaded.restash_minus_redis_p50", "unloaded p50: restash JSON − redis-benchmark -c 1",
         "µs", lambda r, n: _sub(g(r, n, "unloaded", "restash", "p50_us"),
                                 g(r, n, "unloaded", "redis", "p50_us"))),
        ("unloaded.webdis_minus_redis_p50", "unloaded p50: webdis − redis-benchmark -c 1",
         "µs", lambda r, n: _sub(g(r, n, "unloaded", "webdis", "p50_us"),
                                 g(r, n, "unloaded", "redis", "p50_us"))),
        ("unloaded.restash_vs_webdis_p50", "unloaded p50, restash JSON / webdis",
         "×", lambda r, n: _div(g(r, n, "unloaded", "restash", "p50_us"),
                                g(r, n, "unloaded", "webdis", "p50_us"))),
        ("get_json.restash_vs_hyper",
         "GET req/s: restash / hyper answering a constant (restash's HTTP stack alone)",
         "×", lambda r, n: _div(g(r, n, "get_json", "restash", "rps"),
                                g(r, n, "get_json", "hyper", "rps"))),
        ("get_json.hyper_vs_webdis",
         "GET: hyper answering a constant (restash's HTTP stack, no Redis) / webdis, req/s",
         "×", lambda r, n: _div(g(r, n, "get_json", "hyper", "rps"),
                                g(r, n, "get_json", "webdis", "rps"))),
        ("get_json.restash_minus_hyper_cpu",
         "CPU per GET: restash − hyper answering a constant (what restash adds to its stack)",
         "µs", lambda r, n: _sub(g(r, n, "get_json", "restash", "cpu_us_per_req"),
                                 g(r, n, "get_json", "hyper", "cpu_us_per_req"))),
        ("get_json.hyper_minus_nginx_cpu",
         "CPU per request: hyper answering a constant − nginx answering it",
         "µs", lambda r, n: _sub(g(r, n, "get_json", "hyper", "cpu_us_per_req"),
                                 g(r, n, "get_json", "nginx", "cpu_us_per_req"))),
        ("unloaded.nginx_minus_redis_p50", "unloaded p50: nginx constant − redis-benchmark -c 1",
         "µs", lambda r, n: _sub(g(r, n, "unloaded", "nginx", "p50_us"),
                                 g(r, n, "unloaded", "redis", "p50_us"))),
        ("unloaded.hyper_minus_redis_p50", "unloaded p50: hyper constant − redis-benchmark -c 1",
         "µs", lambda r, n: _sub(g(r, n, "unloaded", "hyper", "p50_us"),
                                 g(r, n, "unloaded", "redis", "p50_us"))),
        ("memory.held_restash_vs_webdis", "peak RSS with open connections, restash / webdis",
         "×", lambda r, n: _div(g(r, n, "memory", "restash", "held_hwm_mb"),
                                g(r, n, "memory", "webdis", "held_hwm_mb"))),
    ]
    for rate in rates:
        shape = f"rate{rate}"
        out.append((f"{shape}.restash_vs_webdis_p99", f"p99 at {rate} req/s, restash / webdis",
                    "×", lambda r, n, s=shape: _div(g(r, n, s, "restash", "p99_us"),
                                                     g(r, n, s, "webdis", "p99_us"))))
        out.append((f"{shape}.restash_vs_nginx_p99",
                    f"p99 at {rate} req/s, restash / nginx answering a constant (the floor)",
                    "×", lambda r, n, s=shape: _div(g(r, n, s, "restash", "p99_us"),
                                                     g(r, n, s, "nginx", "p99_us"))))
        out.append((f"{shape}.restash_vs_hyper_p99",
                    f"p99 at {rate} req/s, restash / hyper answering a constant",
                    "×", lambda r, n, s=shape: _div(g(r, n, s, "restash", "p99_us"),
                                                     g(r, n, s, "hyper", "p99_us"))))
    return out


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "n": len(values), "values": values}


def build(meta, runs):
    """The whole result document: meta, raw runs, figures, ratios, targets."""
    rounds = {}
    for record in runs:
        rounds.setdefault(record["round"], {})[(record["shape"], record["target"])] = record
    figures = {}
    groups = sorted({(r["shape"], r["target"]) for r in runs})
    for shape, target in groups:
        metrics = MEMORY_METRICS if shape == "memory" else METRICS
        for metric, unit in metrics:
            if metric == "commands_per_s" and not shape.startswith("pipeline"):
                continue
            values = [_get(rounds, n, shape, target, metric) for n in sorted(rounds)]
            stats = _stats(values)
            if stats:
                stats["unit"] = unit
                figures[f"{shape}.{target}.{metric}"] = stats
    ratios = {}
    for key, description, unit, fn in ratio_definitions(meta["settings"]["rates"]):
        stats = _stats([fn(rounds, n) for n in sorted(rounds)])
        if stats:
            stats.update(description=description, unit=unit)
            ratios[key] = stats
    top_rate = max(meta["settings"]["rates"]) if meta["settings"]["rates"] else None
    target_rows = [
        ("restash GET (JSON) req/s ≥ 2× webdis GET", ratios, "get_json.restash_vs_webdis",
         ">=", 2.0, "×"),
        ("restash GET req/s ≥ 1× redis-benchmark -c 50 -P 1", ratios,
         "get_json.restash_vs_redis_c50", ">=", 1.0, "×"),
        ("/pipeline ×100 cmd/s ≥ 0.5× redis-benchmark -P 16", ratios,
         "pipeline100.restash_vs_redis_p16", ">=", 0.5, "×"),
        ("unloaded p50 ≤ direct Redis p50 + 40 µs", ratios,
         "unloaded.restash_minus_redis_p50", "<=", 40.0, "µs over Redis"),
        (f"p99 at {top_rate} req/s ≤ 1 ms", figures, f"rate{top_rate}.restash.p99_us",
         "<=", 1000.0, "µs"),
        ("CPU per GET ≤ 12 µs", figures, "get_json.restash.cpu_us_per_req", "<=", 12.0, "µs"),
        ("RSS idle ≤ 20 MB", figures, "memory.restash.idle_hwm_mb", "<=", 20.0, "MB"),
        (f"RSS with {meta['settings']['hold']} open connections ≤ 64 MB", figures,
         "memory.restash.held_hwm_mb", "<=", 64.0, "MB"),
    ]
    targets = []
    for label, table, key, op, limit, unit in target_rows:
        stats = table.get(key)
        median = stats["median"] if stats else None
        met = None if median is None else (median >= limit if op == ">=" else median <= limit)
        targets.append({"target": label, "key": key, "limit": limit, "op": op,
                        "median": median, "unit": unit, "met": met})
    return {"meta": meta, "figures": figures, "ratios": ratios, "targets": targets,
            "runs": runs}


def _fmt(value, unit=""):
    if value is None:
        return "–"
    if unit in ("×",):
        return f"{value:.2f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def _med(stats):
    return "–" if not stats else f"{stats['median']:.0f}"


def _triple(stats, unit=""):
    if not stats:
        return "–"
    if stats["n"] == 1:
        return _fmt(stats["median"], unit)
    return (f"{_fmt(stats['min'], unit)} / **{_fmt(stats['median'], unit)}** / "
            f"{_fmt(stats['max'], unit)}")


SHAPE_NAMES = {
    "get_json": "GET, 50 conns (restash `POST /` JSON; webdis `GET /GET/key`)",
    "get_path": "GET `/get/key`, 50 conns",
    "set": "SET 100 B, 50 conns (restash JSON; webdis `POST /` form)",
    "pipeline10": "`/pipeline` ×10 GET, 50 conns",
    "pipeline100": "`/pipeline` ×100 GET, 50 conns",
    "pipeline_p16": "redis-benchmark -c 50 -P 16 GET",
    "unloaded": "1 connection (restash JSON; webdis `/GET/key`; redis-benchmark -c 1)",
    "unloaded_path": "1 connection, restash `GET /get/key`",
    "cache_get": "cache-aside `GET /cache/bench/item` hit, 50 conns",
}


def shape_name(shape):
    if shape.startswith("rate"):
        return f"fixed rate {int(shape[4:]):,} req/s (oha, latency-corrected)"
    return SHAPE_NAMES.get(shape, shape)


def markdown(results):
    """A short Markdown summary: settings, load figures, memory, ratios, targets."""
    meta, figures = results["meta"], results["figures"]
    s = meta["settings"]
    lines = [
        f"### restash bench {meta['started']}" + (" (quick)" if s["quick"] else ""),
        "",
        f"{s['repeats']} round(s) × {s['duration_s']:g} s per run, {s['connections']} connections, "
        f"{s['value_bytes']}-byte values; servers on CPU {s['server_cpu']}, load on CPU "
        f"{s['load_cpu']}; restash with TOKIO_WORKER_THREADS={s['restash_worker_threads']} and "
        f"{meta.get('restash_redis_connections')} Redis connections, webdis "
        f"{meta.get('webdis_redis_connections')} Redis connections. Load average before "
        f"{meta['loadavg_before']}, after {meta['loadavg_after']}. Cells: min / **median** / max.",
        "",
        "| shape | server | req/s | p50 µs | p99 µs | CPU µs/req | Redis CPU µs/req | "
        "others on server CPU % | load generator / others on load CPU % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    seen = []  # in the order of the first round's runs
    for run in results["runs"]:
        shape, target = run["shape"], run["target"]
        if shape != "memory" and (shape, target) not in seen:
            seen.append((shape, target))
    for shape, target in seen:
        f = lambda m: figures.get(f"{shape}.{target}.{m}")
        rps = f("commands_per_s") or f("rps")
        unit = " cmd/s" if f("commands_per_s") else ""
        errors = f("errors")
        err = f" ({int(errors['max'])} errors)" if errors and errors["max"] else ""
        redis_cpu = f("redis_cpu_us_per_req") if target != "redis" else None
        lines.append(
            f"| {shape_name(shape)} | {target}{err} | {_triple(rps)}{unit} | "
            f"{_triple(f('p50_us'))} | {_triple(f('p99_us'))} | {_triple(f('cpu_us_per_req'))} | "
            f"{_triple(redis_cpu)} | {_triple(f('foreign_server_cpu_pct'))} | "
            f"{_med(f('generator_cpu_pct'))} / {_med(f('foreign_load_cpu_pct'))} |")
    lines += ["", "| memory | idle peak RSS MB | open connections | peak RSS MB with them |",
              "|---|---|---|---|"]
    for target in ("restash", "webdis"):
        f = lambda m: figures.get(f"memory.{target}.{m}")
        if f("idle_hwm_mb"):
            lines.append(f"| {target} | {_triple(f('idle_hwm_mb'))} | "
                         f"{_triple(f('held_connections'))} | {_triple(f('held_hwm_mb'))} |")
    lines += ["", "| ratio (taken round by round) | min / **median** / max |", "|---|---|"]
    for key, stats in results["ratios"].items():
        lines.append(f"| {stats['description']} | {_triple(stats, stats['unit'])}"
                     f"{'' if stats['unit'] == '×' else ' ' + stats['unit']} |")
    lines += ["", "| target | median | met |", "|---|---|---|"]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {_fmt(t['median'], '×' if t['unit'] == '×' else '')}"
                     f" {t['unit']} | {met} |")
    for note in meta.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def _median_run(runs, shape, target):
    """The run whose p50 is the median of its shape's runs (for the chart)."""
    candidates = [r for r in runs if r["shape"] == shape and r["target"] == target
                  and r.get("percentiles_us")]
    if not candidates:
        return None
    candidates.sort(key=lambda r: r.get("p50_us") or 0)
    return candidates[len(candidates) // 2]


def chart(results, path):
    """Latency by percentile (HdrHistogram style) for four situations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter

    runs = results["runs"]
    rates = results["meta"]["settings"]["rates"]
    panels = [
        ("One connection, no other load",
         [("unloaded", "restash", "restash POST / JSON"),
          ("unloaded_path", "restash", "restash GET /get/key"),
          ("unloaded", "webdis", "webdis GET /GET/key"),
          ("unloaded", "redis", "redis-benchmark -c 1 (direct)"),
          ("unloaded", "nginx", "nginx, a constant answer (floor)"),
          ("unloaded", "hyper", "hyper, a constant answer (floor)")]),
        ("GET, 50 connections, closed loop",
         [("get_json", "restash", "restash POST / JSON"),
          ("get_path", "restash", "restash GET /get/key"),
          ("get_json", "webdis", "webdis GET /GET/key"),
          ("get_json", "redis", "redis-benchmark -c 50 -P 1 (direct)"),
          ("get_json", "nginx", "nginx, a constant answer (floor)"),
          ("get_json", "hyper", "hyper, a constant answer (floor)")]),
    ]
    for rate in rates[:2]:
        panels.append((f"Fixed rate {rate:,} req/s (oha, latency-corrected)",
                       [(f"rate{rate}", "restash", "restash POST / JSON"),
                        (f"rate{rate}", "webdis", "webdis GET /GET/key"),
                        (f"rate{rate}", "nginx", "nginx, a constant answer (floor)"),
                        (f"rate{rate}", "hyper", "hyper, a constant answer (floor)")]))
    colors = {"restash POST / JSON": "tab:red", "restash GET /get/key": "tab:orange",
              "webdis GET /GET/key": "tab:blue", "nginx, a constant answer (floor)": "tab:gray",
              "hyper, a constant answer (floor)": "tab:purple"}
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ticks = [50, 90, 99, 99.9, 99.99]
    x = lambda p: 1 / (1 - min(p, 99.999) / 100)
    for ax, (title, series) in zip(axes.flat, panels):
        for shape, target, label in series:
            run = _median_run(runs, shape, target)
            if not run:
                continue
            pts = [(x(p), v) for p, v in run["percentiles_us"] if v is not None]
            ax.plot([a for a, _ in pts], [b for _, b in pts], marker=".", label=label,
                    color=colors.get(label, "tab:green"))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator([x(t) for t in ticks]))
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda v, _: f"{100 - 100 / v:g}%"))
        ax.xaxis.set_minor_locator(FixedLocator([]))
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (µs)")
        ax.set_title(title, fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    meta = results["meta"]
    fig.suptitle(f"restash vs webdis vs Redis: latency by percentile (median run of "
                 f"{meta['settings']['repeats']}; {meta['started']}; load avg "
                 f"{meta['loadavg_before'][0]:.2f} → {meta['loadavg_after'][0]:.2f})",
                 fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    # Re-render the Markdown and the chart of a result file:
    #   bench/.venv/bin/python bench/report.py bench/results/<stamp>.json
    import json
    import sys

    with open(sys.argv[1]) as f:
        document = json.load(f)
    rebuilt = build(document["meta"], document["runs"])
    stem = sys.argv[1][: -len(".json")]
    with open(stem + ".md", "w") as f:
        f.write(markdown(rebuilt))
    chart(rebuilt, stem + ".png")
    print(markdown(rebuilt))
