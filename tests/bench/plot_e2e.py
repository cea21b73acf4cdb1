#!/usr/bin/env python3
"""plot_e2e.py — the README's plot: decode tokens/s against batch size for every engine mode and
the HF peer, one panel per model shape, from an e2e-<gpu>-<date>.json of tests/bench/results/.

Usage: tests/bench/plot_e2e.py RESULTS.json OUT.png
Needs matplotlib (pinned: python3 -m pip install matplotlib==3.9.2); not used by the tests.
"""
import json
import sys

STYLE = {  # mode: (label, marker)
    "int6": ("flexq int6 (FlexQ, ours)", "o"),
    "int6_eager": ("flexq int6, no CUDA graphs", "."),
    "w8a8": ("flexq w8a8 (cuBLAS int8)", "s"),
    "fp16": ("flexq fp16 (cuBLAS fp16)", "^"),
    "hf_fp16": ("HF transformers fp16, static cache + compile", "D"),
    "hf_fp16_plain": ("HF transformers fp16, eager", "v"),
}


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[3], file=sys.stderr)
        return 2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = json.load(open(sys.argv[1]))
    models = sorted({r["model"] for r in res["records"]})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        for mode, (label, marker) in STYLE.items():
            pts = sorted((r["batch"], r["decode_tok_s"]) for r in res["records"]
                         if r["model"] == model and r["mode"] == mode)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch (sequences decoded together)")
        ax.set_ylabel("decode tokens/s")
        ax.set_title(f"{model} shapes (synthetic weights), prompt 128, output 256")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    commit = res["commit"]
    if len(commit) > 12:  # several runs: the newest, the rest are named per record in the JSON
        commit = commit.split()[0] + " and earlier (per record)"
    fig.suptitle(f"{res['gpu']}, commit {commit}, {res['date']}")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
