#!/usr/bin/env python3
"""test_wrk_load.py — a short, bounded wrk load on flexq-serve over loopback.

Usage: test_wrk_load.py FLEXQ_SERVE [-k NAME ...]
Environment: FLEXQ_MODEL (the default model; skipped when missing), FLEXQ_SRCDIR.

1. `wrk -t2 -c8 -d5s --timeout 30s -s deploy/wrk/completions.lua URL/v1/completions` on a
   daemon with default settings: zero socket errors (connect, read, write, timeout), every
   response 200, at least a few requests done; afterwards the daemon answers, its running and
   waiting gauges fall back to 0 (requests cut off by wrk's end are aborted) and it stops cleanly.
2. The same for 3 s on a daemon with one slot and one queue place (--max-num-seqs 1
   --max-queue-requests 1): the only non-2xx allowed are 429 (queue full), and some must occur;
   still zero socket errors.
wrk runs under a 60 s limit. Exit 0 = pass, 1 = fail, 77 = skipped (no model, no executable,
no wrk: Debian package `wrk`).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import serve_fixture as sf  # noqa: E402
from serve_fixture import check, check_eq, TestFailure  # noqa: E402

LUA = os.path.join(sf.src_dir(), "deploy", "wrk", "completions.lua")


def run_wrk(wrk, server, duration_s, connections=8, threads=2):
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "30s",
           "-s", LUA, f"{server.base_url}/v1/completions"]
    env = dict(os.environ, FLEXQ_WRK_JSON="1", FLEXQ_WRK_MODEL=server.model_id(),
               FLEXQ_WRK_MAX_TOKENS="8")
    try:
        p = subprocess.run(cmd, capture_output=True, env=env, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise TestFailure(f"wrk still running after 60 s: {' '.join(cmd)}")
    out = p.stdout.decode(errors="replace")
    print("  | " + "\n  | ".join(out.strip().splitlines()))
    check(p.returncode == 0, f"wrk exit {p.returncode}: {p.stderr.decode(errors='replace')[-400:]}")
    m = re.search(r"^WRK_JSON (\{.*\})$", out, re.M)
    check(m is not None, "wrk printed no WRK_JSON line (deploy/wrk/completions.lua done())")
    return json.loads(m.group(1))


def check_socket_errors(r):
    errs = {k: r[k] for k in ("connect", "read", "write", "timeout") if r[k]}
    check(not errs, f"socket errors during the wrk run: {errs}")


def settle(server, what):
    """Waits (30 s at most) until no request runs or waits, then checks one completion."""
    deadline = time.monotonic() + 30
    running = waiting = None
    while time.monotonic() < deadline:
        m = server.metrics()
        running = metric_value(m, "vllm:num_requests_running")
        waiting = metric_value(m, "vllm:num_requests_waiting")
        if running == 0 and waiting == 0:
            break
        time.sleep(0.2)
    check(running == 0 and waiting == 0,
          f"{what}: running {running}, waiting {waiting} 30 s after the load stopped")
    st, _, j = server.post_json("/v1/completions", {"model": server.model_id(), "prompt": "Hi",
                                                    "max_tokens": 2})
    check_eq(st, 200, f"{what}: a completion after the load ({j})")


def metric_value(text, name):
    total, found = 0.0, False
    for line in text.splitlines():
        mm = re.match(r"^([^\s{#]+)(\{[^}]*\})?\s+(\S+)", line)
        if mm and mm.group(1) == name:
            total += float(mm.group(3))
            found = True
    return total if found else None


def main():
    exe = sf.serve_exe()
    model = sf.model_path()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("SKIP: wrk not installed (Debian package `wrk`)")
        sys.exit(sf.SKIP)
    check_file = os.path.isfile(LUA)

    def test_wrk_default():
        check(check_file, f"{LUA} missing")
        with sf.Server(exe, model, [], name="serve-wrk") as s:
            r = run_wrk(wrk, s, 5)
            check_socket_errors(r)
            check_eq(r["status"], 0, f"non-2xx responses (statuses {r['statuses']})")
            check(r["requests"] >= 4, f"only {r['requests']} requests in 5 s")
            check_eq(set(r["statuses"]), {"200"}, "response statuses")
            settle(s, "default daemon")

    def test_wrk_queue_full():
        check(check_file, f"{LUA} missing")
        args = ["--max-num-seqs", "1", "--max-queue-requests", "1"]
        with sf.Server(exe, model, args, name="serve-wrk-queue") as s:
            r = run_wrk(wrk, s, 3)
            check_socket_errors(r)
            others = {k: v for k, v in r["statuses"].items() if k not in ("200", "429")}
            check(not others, f"statuses other than 200 and 429: {r['statuses']}")
            check(r["statuses"].get("429", 0) > 0,
                  f"8 connections on 1 slot + 1 queue place gave no 429: {r['statuses']}")
            check(r["statuses"].get("200", 0) > 0, f"no request succeeded: {r['statuses']}")
            settle(s, "one-slot daemon")

    sf.run_suite([("test_wrk_default", test_wrk_default),
                  ("test_wrk_queue_full", test_wrk_queue_full)])


if __name__ == "__main__":
    main()
