#!/usr/bin/env python3
"""test_ppl_golden.py — flexq-ppl on the first windows of WikiText-2 gives HF transformers' figure.

Runs `flexq-ppl --ctx CTX --max-windows W` with the CTX and W of tests/data/golden/ppl.json (written
by tests/ref/hf_forward_ref.py from HF transformers in fp32) and requires the same perplexity within
1e-3 relative, the same number of windows and scored tokens, and the JSON fields the CLI promises.
Usage: test_ppl_golden.py FLEXQ_PPL; env FLEXQ_MODEL, FLEXQ_WIKITEXT, FLEXQ_SRCDIR. Exit 77 skips.
"""
import json
import os
import subprocess
import sys


def main():
    ppl_bin = sys.argv[1]
    model, text = os.environ.get("FLEXQ_MODEL", ""), os.environ.get("FLEXQ_WIKITEXT", "")
    for path in (model, text):
        if not os.path.exists(path):
            print(f"missing {path!r}: skipping")
            return 77
    with open(os.path.join(os.environ["FLEXQ_SRCDIR"], "tests/data/golden/ppl.json")) as fh:
        gold = json.load(fh)
    cmd = [ppl_bin, "--model", model, "--text", text, "--ctx", str(gold["ctx"]),
           "--max-windows", str(gold["windows"])]
    print(" ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    got = json.loads(out)
    print(json.dumps(got))
    for key in ("ppl", "tokens", "windows", "ctx", "mode", "backend"):
        assert key in got, f"flexq-ppl output lacks {key!r}"
    assert got["windows"] == gold["windows"], (got["windows"], gold["windows"])
    assert got["tokens"] == gold["scored_tokens"], (got["tokens"], gold["scored_tokens"])
    assert got["text_tokens"] == gold["text_tokens"], (got["text_tokens"], gold["text_tokens"])
    rel = abs(got["ppl"] - gold["ppl"]) / gold["ppl"]
    print(f"ppl {got['ppl']:.6f} vs HF {gold['ppl']:.6f}: relative difference {rel:.2e}")
    assert rel <= 1e-3, f"perplexity differs from HF by {rel:.2e} relative"
    return 0


if __name__ == "__main__":
    sys.exit(main())
