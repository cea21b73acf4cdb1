#!/usr/bin/env python3
"""test_metrics_promtool.py — the /metrics exposition passes `promtool check metrics`.

Usage: test_metrics_promtool.py DUMP_METRICS
Runs the C helper dump_metrics (srv_metrics after a sample workload, rendered) with a plain model
name and with one full of quotes, backslashes and a newline, and pipes each output into
`promtool check metrics`. The parser must accept it (a parse error is exit 1). The linter's only
complaints may be those the vLLM-compatible names make unavoidable (DESIGN §6): "metric names
should not contain ':'" for the vllm:* families, and "non-counter metrics should not have _total
suffix" for the histogram vllm:iteration_tokens_total (vLLM's own name). To prove nothing else
hides behind those, the same text with "vllm:" renamed "vllm_" must lint clean but for the latter.
Exit 0 = pass, 1 = fail, 77 = skipped (promtool missing: Debian package `prometheus`).
"""
import re
import shutil
import subprocess
import sys

SKIP = 77
MODEL_NAMES = ["SmolLM2-135M-Instruct", 'tiny "q6" \\ model\nline two']
COLON = re.compile(r"^vllm:[a-z0-9_]+ metric names should not contain ':'$")
ITER_TOTAL = re.compile(r'^vllm[:_]iteration_tokens_total non-counter metrics should not have '
                        r'"_total" suffix$')


def promtool_check(promtool, text):
    """(exit status, problem lines) of `promtool check metrics` on text."""
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=60)
    out = (p.stdout + p.stderr).decode(errors="replace")
    return p.returncode, [ln.strip() for ln in out.splitlines() if ln.strip()]


def check(promtool, text, allowed, what):
    """Fails unless promtool parses text and its only lint problems match an allowed pattern."""
    rc, lines = promtool_check(promtool, text)
    bad = [ln for ln in lines if not any(a.match(ln) for a in allowed)]
    if rc not in (0, 3) or bad or (rc == 3) != bool(lines):
        print(f"FAIL {what}: promtool exit {rc}")
        for ln in lines:
            print("   ", ln)
        return False
    print(f"ok   {what}: promtool exit {rc}, {len(lines)} expected lint notes")
    return True


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 1
    promtool = shutil.which("promtool")
    if not promtool:
        print("SKIP: promtool not found (Debian package `prometheus`)")
        return SKIP
    ok = True
    for name in MODEL_NAMES:
        text = subprocess.run([sys.argv[1], name], capture_output=True, check=True,
                              timeout=60).stdout.decode()
        what = f"model_name {name!r}"
        ok &= check(promtool, text, [COLON, ITER_TOTAL], what)
        # the vllm: names made legal for the linter: nothing else may remain
        renamed = re.sub(r"^(# (?:HELP|TYPE) )?vllm:", r"\1vllm_", text, flags=re.M)
        ok &= check(promtool, renamed, [ITER_TOTAL], what + ", vllm: renamed vllm_")
        # and the linter did see the vLLM families (the rename is not vacuous)
        if "vllm:num_requests_running" not in text or "vllm:" in renamed:
            print(f"FAIL {what}: rename check")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
