#!/usr/bin/env python3
"""test_readme_curl.py — the README's curl examples, run verbatim against flexq-serve.

Usage: test_readme_curl.py FLEXQ_SERVE [-k NAME ...]
Environment: FLEXQ_MODEL (the default model; skipped when missing), FLEXQ_SRCDIR (README.md).

Takes README.md's lines between `<!-- curl-examples -->` and `<!-- /curl-examples -->`, keeps
`\\` continuations (and line breaks inside quotes) together, and runs every command that starts
with `curl` through bash exactly as written, except that `localhost:8000` / `127.0.0.1:8000`
become the test daemon's address; `$PORT` is set in the environment for commands that use it.
Each must exit 0 within 120 s and print a JSON object that is not an error, an SSE stream ending
in `data: [DONE]`, or Prometheus text.
The block must show completions, a streamed completion, chat, models and metrics.
Exit 0 = pass, 1 = fail, 77 = skipped (no model, no executable, no curl, or no block yet).
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import serve_fixture as sf  # noqa: E402
from serve_fixture import check, TestFailure  # noqa: E402

BEGIN, END = "<!-- curl-examples -->", "<!-- /curl-examples -->"


def _complete(lines):
    """True when the lines form a whole shell command: no trailing backslash, no open quote."""
    if lines[-1].rstrip().endswith("\\"):
        return False
    try:
        shlex.split("\n".join(lines))
    except ValueError:  # "No closing quotation"
        return False
    return True


def extract_commands(readme_text):
    """The curl commands of the marked block, each as the text a user would paste: its lines
    (backslash continuations and quoted line breaks included) joined with newlines, the markdown
    indentation of the first line taken off every line. None when the block is missing."""
    if BEGIN not in readme_text or END not in readme_text:
        return None
    block = readme_text.split(BEGIN, 1)[1].split(END, 1)[0]
    cmds, cur, indent = [], None, ""
    for raw in block.splitlines():
        if cur is not None:
            cur.append(raw[len(indent):] if raw.startswith(indent) else raw.lstrip())
            if _complete(cur) or len(cur) >= 50:
                cmds.append("\n".join(cur))
                cur = None
            continue
        stripped = raw.lstrip()
        indent = raw[: len(raw) - len(stripped)]
        if stripped.startswith("$ curl "):
            stripped, indent = stripped[2:], indent + "  "
        if stripped.startswith("curl ") or stripped == "curl":
            cur = [stripped]
            if _complete(cur):
                cmds.append(stripped)
                cur = None
    if cur is not None:
        cmds.append("\n".join(cur))
    return cmds


def localize(cmd, port):
    for host in ("localhost:8000", "127.0.0.1:8000"):
        cmd = cmd.replace(host, f"127.0.0.1:{port}")
    return cmd


def classify_output(out):
    """("json", obj) | ("sse", events) | ("prom", n_samples) | raises TestFailure."""
    text = out.strip()
    if text.startswith("data:"):
        events = [e.strip() for e in re.split(r"\n\n+", text) if e.strip()]
        check(all(e.startswith("data: ") for e in events), f"SSE with odd events: {text[:300]!r}")
        check(events[-1] == "data: [DONE]", f"SSE not ending in [DONE]: ...{text[-200:]!r}")
        for e in events[:-1]:
            j = json.loads(e[len("data: "):])
            check("error" not in j, f"an error event: {e[:300]}")
        return "sse", events
    if text.startswith("{"):
        j = json.loads(text)
        check(isinstance(j, dict) and "error" not in j, f"an error response: {text[:400]}")
        return "json", j
    if "# TYPE" in text or "# HELP" in text:
        n = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
        check(n > 0, "Prometheus text without samples")
        return "prom", n
    raise TestFailure(f"output is neither JSON, SSE nor Prometheus text: {text[:300]!r}")


def main():
    exe = sf.serve_exe()
    model = sf.model_path()
    if shutil.which("curl") is None:
        print("SKIP: curl not installed")
        sys.exit(sf.SKIP)
    readme = os.path.join(sf.src_dir(), "README.md")
    with open(readme, encoding="utf-8") as f:
        cmds = extract_commands(f.read())
    if cmds is None:
        print(f"SKIP: README.md has no {BEGIN} ... {END} block yet")
        sys.exit(sf.SKIP)
    if not cmds:
        print(f"FAIL: the {BEGIN} block holds no curl command")
        print("0 passed, 1 failed, 0 skipped")
        sys.exit(1)

    server = sf.Server(exe, model, [], name="serve-readme")
    seen_kinds = {}

    def make_test(i, cmd):
        def t():
            run = localize(cmd, server.port)
            env = dict(os.environ, PORT=str(server.port))
            try:
                p = subprocess.run(["bash", "-c", run], capture_output=True, env=env, timeout=120,
                                   check=False)
            except subprocess.TimeoutExpired:
                raise TestFailure(f"did not finish within 120 s: {run}")
            out = p.stdout.decode("utf-8", errors="replace")
            check(p.returncode == 0, f"exit status {p.returncode}: {run}\n  stderr: "
                  f"{p.stderr.decode(errors='replace')[-400:]}\n  stdout: {out[:400]}")
            kind, _ = classify_output(out)
            seen_kinds[i] = (kind, cmd)
            one = " ".join(cmd.split())
            print(f"  {kind}: {one[:110]}{'...' if len(one) > 110 else ''}")
        return t

    tests = [(f"readme_curl_{i + 1}", make_test(i, c)) for i, c in enumerate(cmds)]

    def coverage():
        paths = " ".join(c for c in cmds)
        missing = [p for p in ("/v1/completions", "/v1/chat/completions", "/v1/models", "/metrics")
                   if p not in paths]
        kinds = {k for k, _ in seen_kinds.values()}
        if "sse" not in kinds:
            missing.append("a streamed request (SSE output)")
        check(not missing, f"the README block lacks: {', '.join(missing)}")

    tests.append(("readme_curl_coverage", coverage))
    sf.run_suite(tests, setup=server.start, teardown=server.stop)


if __name__ == "__main__":
    main()
