#!/usr/bin/env python3
"""test_modelfile_python.py — an INT6 model file opens with the Python `safetensors` package.

Usage: test_modelfile_python.py MAKE_TINY_FQ6
Runs the C helper make_tiny_fq6 to write the tiny model as an INT6 model file (tied with automatic
group sizes, and untied with group 32), opens each with safetensors.safe_open(path, "numpy"), lists
its tensors and metadata, and checks against flexq.config and flexq.quant: the exact tensor set,
every dtype and shape, the alignment the writer promises (data area at a multiple of 64 bytes,
every qweight at a multiple of 16), and — unpacking the codes with numpy as quant/fq_pack.h lays
them out — that every code is in [-32, 31], the padding codes are 0 and every (row, group) reaches
|q| = 31 (scale = max|W| / 31). Exit 0 = pass, 1 = fail, 77 = skipped (safetensors or numpy
missing).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

SKIP = 77
LIN_TYPES = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]


def lin_dims(cfg, t):
    """(N, K) of a linear type."""
    e, qd = cfg["n_embd"], cfg["n_head"] * cfg["head_dim"]
    kvd = cfg["n_head_kv"] * cfg["head_dim"]
    return {"attn_q": (qd, e), "attn_k": (kvd, e), "attn_v": (kvd, e), "attn_output": (e, qd),
            "ffn_gate": (cfg["n_ff"], e), "ffn_up": (cfg["n_ff"], e),
            "ffn_down": (e, cfg["n_ff"])}[t]


def row_bytes(k):
    return (k + 63) // 64 * 48


def unpack_codes(np, qw, k):
    """Signed codes [N, K_pad] from packed rows [N, row_bytes] (fq_pack.h)."""
    n = qw.shape[0]
    chunks = qw.reshape(n, -1, 48)
    low, high = chunks[..., :32], chunks[..., 32:]
    lo = np.concatenate([low & 15, low >> 4], axis=-1)
    hi = np.concatenate([(high >> (2 * j)) & 3 for j in range(4)], axis=-1)
    u = lo.astype(np.int16) | (hi.astype(np.int16) << 4)
    return (u - 32).reshape(n, -1)


def expected_tensors(cfg, group):
    """name -> (dtype, shape) that flexq.config and the group sizes imply."""
    v, e = cfg["n_vocab"], cfg["n_embd"]
    want = {"token_embd": ("float16", (v, e)), "output_norm": ("float16", (e,))}
    if not cfg["tied_embeddings"]:
        want["output"] = ("float16", (v, e))
    for layer in range(cfg["n_layer"]):
        want[f"blk.{layer}.attn_norm"] = ("float16", (e,))
        want[f"blk.{layer}.ffn_norm"] = ("float16", (e,))
        for t in LIN_TYPES:
            n, k = lin_dims(cfg, t)
            want[f"blk.{layer}.{t}.qweight"] = ("uint8", (n, row_bytes(k)))
            want[f"blk.{layer}.{t}.scales"] = ("float16", (n, k // group[t]))
    return want


def raw_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n))


def check_file(np, safe_open, path, variant):
    problems = []
    with safe_open(path, "numpy") as f:
        meta = f.metadata()
        keys = sorted(f.keys())
        print(f"{variant}: {len(keys)} tensors, metadata keys {sorted(meta)}")
        if meta.get("flexq.version") != "1":
            return [f"flexq.version is {meta.get('flexq.version')!r}"]
        cfg = json.loads(meta["flexq.config"])
        quant = json.loads(meta["flexq.quant"])
        tok = json.loads(meta["flexq.tokenizer"])
        print(f"{variant}: config {cfg}")
        print(f"{variant}: group_size {quant['group_size']}, abits "
              f"{sorted(set(quant['abits'].values()))}, sensitivity {quant['sensitivity']}")
        gs = quant["group_size"]
        group = {t: (gs[t] if isinstance(gs, dict) else gs) for t in LIN_TYPES}
        want = expected_tensors(cfg, group)
        if set(keys) != set(want):
            problems.append(f"tensor set differs: missing {sorted(set(want) - set(keys))}, "
                            f"extra {sorted(set(keys) - set(want))}")
        if len(tok["tokens"]) > cfg["n_vocab"] or len(tok["token_types"]) != len(tok["tokens"]):
            problems.append("tokenizer arrays inconsistent with the config")
        if len(quant["abits"]) != cfg["n_layer"] * len(LIN_TYPES):
            problems.append(f"abits has {len(quant['abits'])} entries")
        for name in keys:
            a = f.get_tensor(name)
            if name in want and (str(a.dtype), tuple(a.shape)) != want[name]:
                problems.append(f"{name}: {a.dtype} {a.shape}, expected {want[name]}")
            if name.endswith(".qweight"):
                t = name.split(".")[2]
                n, k = lin_dims(cfg, t)
                q = unpack_codes(np, a, k)
                if q.min() < -32 or q.max() > 31:
                    problems.append(f"{name}: codes outside [-32, 31]")
                if (q[:, k:] != 0).any():
                    problems.append(f"{name}: padding codes are not 0")
                amax = np.abs(q[:, :k]).reshape(n, k // group[t], group[t]).max(axis=-1)
                if (amax != 31).any():
                    problems.append(f"{name}: some (row, group) max |q| is not 31 "
                                    f"(values {sorted(set(amax.ravel().tolist()))})")
            if name.endswith(".scales") and not (a.astype(np.float32) > 0).all():
                problems.append(f"{name}: non-positive scale")
    hlen, header = raw_header(path)
    if (8 + hlen) % 64:
        problems.append(f"data area starts at {8 + hlen}, not a multiple of 64")
    for name, entry in header.items():
        if name.endswith(".qweight") and entry["data_offsets"][0] % 16:
            problems.append(f"{name}: offset {entry['data_offsets'][0]} not a multiple of 16")
    return problems


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    try:
        import numpy as np
        from safetensors import safe_open
    except ImportError as e:
        print(f"skipped: {e}")
        return SKIP
    make = sys.argv[1]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for variant, args in [("tied-auto", []), ("untied-g32", ["--untied", "--group", "32"])]:
            path = os.path.join(tmp, f"{variant}.fq6.safetensors")
            p = subprocess.run([make, path] + args, capture_output=True, text=True, check=False)
            if p.returncode != 0:
                print(f"{variant}: {make} exited {p.returncode}: {p.stderr.strip()}")
                return 1
            problems = check_file(np, safe_open, path, variant)
            for msg in problems:
                print(f"{variant}: FAIL {msg}")
            failed = failed or bool(problems)
    print("FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
