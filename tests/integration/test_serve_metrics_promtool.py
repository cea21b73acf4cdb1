#!/usr/bin/env python3
"""test_serve_metrics_promtool.py — the live daemon's GET /metrics passes `promtool check
metrics` after real traffic.

Usage: test_serve_metrics_promtool.py FLEXQ_SERVE [-k NAME ...]
Environment: FLEXQ_MODEL (the default model; skipped when missing).

Starts flexq-serve, sends a completion, a streamed completion, a chat, a 400, a 404, a client that
leaves mid-stream, then scrapes /metrics: Content-Type text/plain version 0.0.4, the DESIGN §6
families present and counting the traffic, and `promtool check metrics` accepts it with no lint
note beyond those vLLM's names make unavoidable ("metric names should not contain ':'" for
vllm:*, the "_total" suffix of the histogram vllm:iteration_tokens_total); the same text with
"vllm:" renamed "vllm_" must lint clean but for the latter. (tests/integration/
test_metrics_promtool.py checks the renderer alone, offline; this one checks the daemon.)
Exit 0 = pass, 1 = fail, 77 = skipped (no model, no executable, no promtool: Debian package
`prometheus`).
"""
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import serve_fixture as sf  # noqa: E402
from serve_fixture import check, check_eq  # noqa: E402

COLON = re.compile(r"^vllm:[a-z0-9_]+ metric names should not contain ':'$")
ITER_TOTAL = re.compile(r'^vllm[:_]iteration_tokens_total non-counter metrics should not have '
                        r'"_total" suffix$')
FAMILIES = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
            "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
            "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
            "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds",
            "vllm:iteration_tokens_total", "flexq_requests_rejected_total",
            "flexq_requests_aborted_total"]


def promtool_check(promtool, text):
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=60, check=False)
    out = (p.stdout + p.stderr).decode(errors="replace")
    return p.returncode, [ln.strip() for ln in out.splitlines() if ln.strip()]


def lint(promtool, text, allowed, what):
    rc, lines = promtool_check(promtool, text)
    bad = [ln for ln in lines if not any(a.match(ln) for a in allowed)]
    check(rc in (0, 3) and not bad, f"{what}: promtool exit {rc}, problems:\n    "
          + "\n    ".join(bad or lines))
    print(f"  {what}: promtool exit {rc}, {len(lines)} expected lint notes")


def sample(text, name, **labels):
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(r"^([^\s{#]+)(\{([^}]*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
            found = True
    return total if found else None


def main():
    exe = sf.serve_exe()
    model = sf.model_path()
    promtool = shutil.which("promtool")
    if promtool is None:
        print("SKIP: promtool not found (Debian package `prometheus`)")
        sys.exit(sf.SKIP)
    s = sf.Server(exe, model, [], name="serve-metrics")

    def traffic():
        mid = s.model_id()
        st, _, j = s.post_json("/v1/completions", {"model": mid, "prompt": "Hello",
                                                   "max_tokens": 4})
        check_eq(st, 200, f"completion ({j})")
        res = sf.stream_post(s, "/v1/completions", {"model": mid, "prompt": "Hi", "max_tokens": 4,
                                                    "stream": True})
        check(res.status == 200 and not res.problems, f"stream: {res.status} {res.problems}")
        st, _, j = s.post_json("/v1/chat/completions", {
            "model": mid, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
        check_eq(st, 200, f"chat ({j})")
        st, _, _ = s.request("POST", "/v1/completions", "{bad",
                             {"Content-Type": "application/json"})
        check_eq(st, 400, "bad JSON")
        st, _, _ = s.post_json("/v1/completions", {"model": "nope", "prompt": "x"})
        check_eq(st, 404, "unknown model")
        sf.stream_post(s, "/v1/completions", {"model": mid, "prompt": "Once", "max_tokens": 200,
                                              "stream": True, "ignore_eos": True}, max_events=2)

    def scrape_and_lint():
        st, h, data = s.request("GET", "/metrics")
        check_eq(st, 200, "GET /metrics")
        ct = h.get("content-type", "")
        check(ct.startswith("text/plain") and "version=0.0.4" in ct, f"content-type {ct!r}")
        text = data.decode()
        missing = [f for f in FAMILIES if f"# TYPE {f} " not in text]
        check(not missing, f"/metrics lacks the families {missing}")
        check((sample(text, "vllm:generation_tokens_total") or 0) >= 8,
              "vllm:generation_tokens_total counts fewer than the 8 tokens generated")
        check((sample(text, "vllm:e2e_request_latency_seconds_count") or 0) >= 3,
              "vllm:e2e_request_latency_seconds_count < 3 after 3 finished requests")
        mid = s.model_id()
        check(f'model_name="{mid}"' in text, f'no series labelled model_name="{mid}"')
        lint(promtool, text, [COLON, ITER_TOTAL], "the daemon's /metrics")
        renamed = re.sub(r"^(# (?:HELP|TYPE) )?vllm:", r"\1vllm_", text, flags=re.M)
        lint(promtool, renamed, [ITER_TOTAL], "the same with vllm: renamed vllm_")

    sf.run_suite([("traffic", traffic), ("promtool_check_metrics", scrape_and_lint)],
                 setup=s.start, teardown=s.stop)


if __name__ == "__main__":
    main()
