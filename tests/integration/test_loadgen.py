#!/usr/bin/env python3
"""test_loadgen.py — the serving benchmark's load generator (tests/bench/loadgen.py) against a live
flexq-serve with the default model on loopback (CPU backend, short outputs).

Usage: test_loadgen.py FLEXQ_SERVE [-k NAME ...]
Environment: FLEXQ_MODEL (the default model; skipped when missing), FLEXQ_SRCDIR.

1. Two concurrency levels (1 and 3), 4 requests each of 8 prompt and 6 output tokens: every
   request completes, out_tok_s equals requests * 6 / duration (usage counted), TTFT <= E2E,
   medians within mean..p99 bounds, TPOT and ITL present, offline_tok_s taken from --offline.
2. A model name the server does not serve: every request fails with HTTP 404, the generator
   counts them and exits 1.
Exit 0 = pass, 1 = fail, 77 = skipped.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import serve_fixture as sf  # noqa: E402
from serve_fixture import check, check_eq  # noqa: E402

LOADGEN = os.path.join(sf.src_dir(), "tests", "bench", "loadgen.py")


def run(server, model, conc, extra=()):
    cmd = [sys.executable, LOADGEN, "--url", server.base_url, "--model", model,
           "--concurrency", conc, "--requests", "4", "--prompt", "8", "--output", "6",
           "--token-min", "300", "--token-max", "5000", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    recs = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return p.returncode, recs, p.stderr


def main():
    exe = sf.serve_exe()
    model = sf.model_path()

    def test_loadgen_measures_every_request():
        with sf.Server(exe, model, [], name="serve-loadgen") as s, \
                tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as off:
            off.write(json.dumps({"batch": 3, "decode_tok_s": 123.5}) + "\n")
            off.close()
            rc, recs, err = run(s, s.model_id(), "1,3", ["--offline", off.name])
            os.unlink(off.name)
            check_eq(rc, 0, f"loadgen exit code (stderr: {err[-300:]})")
            check_eq([r["concurrency"] for r in recs], [1, 3], "levels")
            for r in recs:
                check_eq((r["completed"], r["failed"]), (4, 0), "completed, failed")
                want = 4 * 6 / r["duration_s"]
                check(abs(r["out_tok_s"] - want) <= 0.02 * want,
                      f"out_tok_s {r['out_tok_s']} vs 24 tokens / {r['duration_s']} s")
                check(abs(r["req_s"] - 4 / r["duration_s"]) <= 0.02 * r["req_s"], "req_s")
                for k in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
                    m = r[k]
                    check(m["mean"] is not None and m["median"] is not None, f"{k} missing")
                    check(0 < m["median"] <= m["p99"] + 1e-9, f"{k} median/p99 {m}")
                check(r["ttft_ms"]["p99"] <= r["e2e_ms"]["p99"] + 1e-9, "TTFT above E2E")
            check_eq(recs[0]["offline_tok_s"], None, "offline rate of concurrency 1")
            check_eq(recs[1]["offline_tok_s"], 123.5, "offline rate of concurrency 3")

    def test_loadgen_counts_failures():
        with sf.Server(exe, model, [], name="serve-loadgen-bad") as s:
            rc, recs, _ = run(s, "no-such-model", "2")
            check_eq(rc, 1, "exit code with failing requests")
            check_eq((recs[0]["completed"], recs[0]["failed"]), (0, 4), "completed, failed")
            check("404" in recs[0].get("first_error", ""), f"error {recs[0].get('first_error')}")

    sf.run_suite([("test_loadgen_measures_every_request", test_loadgen_measures_every_request),
                  ("test_loadgen_counts_failures", test_loadgen_counts_failures)])


if __name__ == "__main__":
    main()
