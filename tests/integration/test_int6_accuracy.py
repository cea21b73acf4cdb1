#!/usr/bin/env python3
"""test_int6_accuracy.py — the INT6 path on the real default model, end to end.

flexq-quant turns the default GGUF into an INT6 model file with the sensitivity analysis (a short
calibration on Debian's fortunes text), the report and the file are checked, and flexq-ppl measures
the first WikiText-2 window of 512 tokens in each mode. The figures are pinned (tolerance 1e-3
relative; tests/data/golden/int6_ppl.json, recorded by this script with --record) and bounded
against fp: w6a16 and w6a8 within 3 %, flex within 4 %, w6a6 worse than w6a8.
Usage: test_int6_accuracy.py FLEXQ_QUANT FLEXQ_PPL [--record]; env FLEXQ_MODEL, FLEXQ_WIKITEXT,
FLEXQ_SRCDIR. Exit 77 skips (model, text or calibration file missing).
"""
import json
import os
import subprocess
import sys
import tempfile

CALIB = "/usr/share/games/fortunes/literature"
CTX, WINDOWS = 512, 1
BOUNDS = {"w6a16": 0.03, "w6a8": 0.03, "flex": 0.04}


def ppl(ppl_bin, model, text, mode):
    out = subprocess.run([ppl_bin, "--model", model, "--text", text, "--ctx", str(CTX),
                          "--max-windows", str(WINDOWS), "--mode", mode], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    got = json.loads(out)
    assert got["mode"] == mode and got["windows"] == WINDOWS, got
    return got["ppl"]


def quantize(quant_bin, model, out, report):
    subprocess.run([quant_bin, "--in", model, "--out", out, "--report", report, "--abits", "flex",
                    "--calib", CALIB, "--calib-ctx", "128", "--calib-windows", "2"], check=True)
    with open(report) as fh:
        rep = json.load(fh)
    sens = rep["sensitivity"]
    units = {u["unit"]: u for u in sens["units"]}
    assert sorted(units) == sorted(["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
                                    "ffn_up", "ffn_down"]), units.keys()
    kept = [u for u in units.values() if u["abits"] == "A8"]
    assert len(kept) == 1, kept  # default rule: the single most sensitive type keeps A8
    worst = max(units.values(), key=lambda u: u["delta"])
    assert kept[0]["unit"] == worst["unit"]
    assert rep["linears_a8"] == 30 and rep["linears_a6"] == 180, rep
    assert 6.0 < rep["bits_per_weight"] < 6.5, rep["bits_per_weight"]
    assert len(rep["source_sha256"]) == 64
    print(f"sensitivity: most sensitive {worst['unit']} (+{worst['delta']:.4f}); "
          f"bits/weight {rep['bits_per_weight']:.4f}; file {rep['file_bytes']} bytes")
    return rep


def main():
    quant_bin, ppl_bin = sys.argv[1], sys.argv[2]
    record = "--record" in sys.argv[3:]
    model, text = os.environ.get("FLEXQ_MODEL", ""), os.environ.get("FLEXQ_WIKITEXT", "")
    for path in (model, text, CALIB):
        if not os.path.exists(path):
            print(f"missing {path!r}: skipping")
            return 77
    golden_path = os.path.join(os.environ["FLEXQ_SRCDIR"], "tests/data/golden/int6_ppl.json")
    with tempfile.TemporaryDirectory() as tmp:
        fq6 = os.path.join(tmp, "smollm2.fq6.safetensors")
        quantize(quant_bin, model, fq6, os.path.join(tmp, "report.json"))
        got = {"fp": ppl(ppl_bin, model, text, "fp")}
        for mode in ("w6a16", "w6a8", "w6a6", "flex"):
            got[mode] = ppl(ppl_bin, fq6, text, mode)
    print(json.dumps(got))
    if record:
        with open(golden_path, "w") as fh:
            json.dump({"ctx": CTX, "windows": WINDOWS, "calibration": CALIB, "ppl": got}, fh,
                      indent=1)
        return 0
    for mode, bound in BOUNDS.items():
        rel = got[mode] / got["fp"] - 1
        assert rel < bound, f"{mode} is {100 * rel:.2f}% over fp (bound {100 * bound:.0f}%)"
    assert got["w6a6"] > got["w6a8"], got
    with open(golden_path) as fh:
        gold = json.load(fh)["ppl"]
    for mode, value in gold.items():
        rel = abs(got[mode] - value) / value
        assert rel <= 1e-3, f"{mode}: ppl {got[mode]:.6f}, pinned {value:.6f} ({rel:.2e})"
    print("all modes within their bounds and pinned values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
