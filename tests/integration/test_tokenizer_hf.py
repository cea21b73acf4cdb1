#!/usr/bin/env python3
"""test_tokenizer_hf.py — flexq-tokenize gives the same ids as HF `tokenizers`, line by line.

Usage: test_tokenizer_hf.py FLEXQ_TOKENIZE
Environment: FLEXQ_MODEL (the GGUF), FLEXQ_WIKITEXT (optional; skipped when absent), FLEXQ_SRCDIR.

For WikiText-2 and tests/data/tokenizer_edge_cases.txt, with the model's own pre-tokenizer and
with the gpt2 and llama3 ones forced (--pre, the same on both sides): runs `flexq-tokenize --lines`
and the reference (tests/ref/hf_tokenizer_ref.py), compares every line and prints the first
mismatch with context; then checks decode(encode(line)) == line for every valid UTF-8 line through
`flexq-tokenize --decode --lines`. Exit 0 = pass, 1 = fail, 77 = skipped (no model, or the
`tokenizers` / `gguf` packages missing).
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "ref"))

SKIP = 77


def run_cli(cli, args, data):
    """Runs flexq-tokenize; returns (stdout bytes, seconds)."""
    t0 = time.perf_counter()
    p = subprocess.run([cli] + args, input=data, capture_output=True, check=False)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join([cli] + args)} exited {p.returncode}: "
                           f"{p.stderr.decode(errors='replace').strip()}")
    return p.stdout, dt


def describe_mismatch(tok, name, pre, lineno, line, want, got):
    k = next((i for i in range(min(len(want), len(got))) if want[i] != got[i]),
             min(len(want), len(got)))
    lo = max(0, k - 3)
    show = lambda ids: [(i, tok.id_to_token(i)) for i in ids[lo:k + 4]]  # noqa: E731
    print(f"FAIL {name} [pre={pre}] line {lineno}: {line[:200]!r}")
    print(f"  first difference at token {k} ({len(want)} ids from HF, {len(got)} from flexq)")
    print(f"  HF:    {show(want)}")
    print(f"  flexq: {show(got)}")


def compare_ids(ref, cli, model, meta, name, data, pre):
    """Returns the number of mismatching lines of one file under one pre-tokenizer."""
    lines = ref.split_lines(data)
    tok = ref.build_tokenizer(meta, pre)
    want = ref.encode_lines(tok, lines)
    out, dt = run_cli(cli, ["--model", model, "--lines", "--pre", pre], data)
    got = [json.loads(s) for s in out.decode().splitlines()]
    if len(got) != len(want):
        print(f"FAIL {name} [pre={pre}]: {len(got)} lines from flexq, {len(want)} from HF")
        return max(1, abs(len(got) - len(want)))
    bad = [i for i in range(len(want)) if want[i] != got[i]]
    if bad:
        i = bad[0]
        describe_mismatch(tok, name, pre, i + 1, lines[i].decode("utf-8", "replace"), want[i],
                          got[i])
    print(f"{'ok  ' if not bad else 'FAIL'} {name} [pre={pre}]: {len(want)} lines, "
          f"{len(bad)} differ, {sum(map(len, got))} ids, flexq {dt:.2f} s")
    return len(bad)


def byte_char(b):
    """GPT-2's byte-level character for byte b."""
    if b <= 0x20:
        return chr(0x100 + b)
    if 0x7F <= b <= 0xA0:
        return chr(0x121 + b - 0x7F)
    return chr(0x143) if b == 0xAD else chr(b)


def check_round_trip(ref, cli, model, meta, name, data):
    """decode(encode(line)) == line for every valid UTF-8 line whose bytes all have a token (a
    byte missing from the vocabulary is dropped by HF and by us alike); returns the failures."""
    vocab = set(meta["tokens"])
    missing = {b for b in range(256) if byte_char(b) not in vocab}
    valid, lacking = [], 0
    for ln in ref.split_lines(data):
        try:
            ln.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if missing.intersection(ln):
            lacking += 1
        else:
            valid.append(ln)
    if lacking:
        print(f"note: {name}: {lacking} valid lines hold bytes without a token "
              f"({', '.join(f'{b:02X}' for b in sorted(missing))}): not round-tripped")
    text = b"".join(ln + b"\r\n" for ln in valid)  # CRLF: a line's own final CR survives
    ids, _ = run_cli(cli, ["--model", model, "--lines"], text)
    back, _ = run_cli(cli, ["--model", model, "--lines", "--decode"], ids)
    got = back.split(b"\n")[:-1]
    bad = [i for i in range(len(valid)) if i >= len(got) or got[i] != valid[i]]
    if len(got) != len(valid):
        print(f"FAIL {name} round trip: {len(got)} lines back for {len(valid)}")
    if bad:
        i = bad[0]
        print(f"FAIL {name} round trip line {i + 1}: {valid[i][:200]!r} came back as "
              f"{(got[i] if i < len(got) else b'')[:200]!r}")
    print(f"{'ok  ' if not bad else 'FAIL'} {name} round trip: {len(valid)} valid lines, "
          f"{len(bad)} differ")
    return len(bad) + (len(got) != len(valid))


def main():
    if len(sys.argv) != 2:
        print("usage: test_tokenizer_hf.py FLEXQ_TOKENIZE", file=sys.stderr)
        return 2
    cli = sys.argv[1]
    model = os.environ.get("FLEXQ_MODEL", "")
    if not os.path.isfile(model):
        print(f"SKIP: model not found: {model!r} (scripts/fetch-model.sh)")
        return SKIP
    try:
        import hf_tokenizer_ref as ref
        import gguf  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as e:
        print(f"SKIP: {e} (pip install -r tests/ref/requirements.txt)")
        return SKIP
    src = os.environ.get("FLEXQ_SRCDIR", os.path.join(HERE, "..", ".."))
    files = []
    wikitext = os.environ.get("FLEXQ_WIKITEXT", "")
    if os.path.isfile(wikitext):
        files.append(("wikitext-2-raw-test", wikitext))
    else:
        print(f"note: WikiText-2 not found at {wikitext!r}; checking the edge cases only")
    files.append(("tokenizer_edge_cases", os.path.join(src, "tests", "data",
                                                        "tokenizer_edge_cases.txt")))
    meta = ref.read_gguf_tokenizer(model)
    failures = 0
    for name, path in files:
        with open(path, "rb") as f:
            data = f.read()
        for pre in dict.fromkeys([meta["pre"], "gpt2", "llama3"]):
            failures += compare_ids(ref, cli, model, meta, name, data, pre)
        failures += check_round_trip(ref, cli, model, meta, name, data)
    print("PASS" if failures == 0 else f"FAIL: {failures} mismatching lines")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
