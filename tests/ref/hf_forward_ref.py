#!/usr/bin/env python3
"""hf_forward_ref.py — writes the golden files the CPU forward-pass and perplexity tests compare with.

HF transformers (fp32, CPU) loads the default GGUF itself (it dequantizes the weights and undoes the
GGUF q/k row permutation, so it runs rotate-half RoPE on the same weights), then:
  * forward.json + forward_*.f32: for each prompt, its token ids, the greedy 32-token continuation,
    and full fp32 logits at the last prompt position and at the position that predicts the 32nd
    generated token (i.e. after a KV cache of prompt + 31 tokens);
  * ppl.json: perplexity of WikiText-2 (rows joined with "\n\n", CR stripped) over the first
    non-overlapping windows of CTX tokens, each scored on all but its first token.
Run once by a developer (not in CI):
    python3 tests/ref/hf_forward_ref.py --model ~/.cache/flexq/SmolLM2-135M-Instruct.Q4_1.gguf \
        --wikitext ../shared/data/wikitext-2-raw-test.txt --out tests/data/golden
Versions used are in tests/ref/requirements.txt.
"""
import argparse
import json
import math
import os

import numpy as np
import torch
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The history of the Roman Empire begins",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
]
N_GEN = 32


def load(model_path):
    d, f = os.path.split(os.path.abspath(model_path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    # The GGUF says pre-tokenizer "smollm": every digit split off, then the GPT-2 byte-level regex
    # (what SmolLM2's own tokenizer.json does); transformers' converter leaves the digit split out.
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    return tok, model


@torch.no_grad()
def logits_of(model, ids):
    out = model(torch.tensor([ids], dtype=torch.long))
    return out.logits[0].float().numpy()


@torch.no_grad()
def forward_golden(tok, model, out_dir):
    records = []
    for i, prompt in enumerate(PROMPTS):
        ids = tok.encode(prompt, add_special_tokens=False)
        seq = list(ids)
        last_prompt = logits_of(model, seq)[-1]
        for _ in range(N_GEN):
            seq.append(int(np.argmax(logits_of(model, seq)[-1])))
        gen = seq[len(ids):]
        # logits that predicted the last generated token: context = prompt + first 31 generated
        last_gen = logits_of(model, seq[:-1])[-1]
        f_prompt = f"forward_{i}_prompt.f32"
        f_gen = f"forward_{i}_gen31.f32"
        last_prompt.astype("<f4").tofile(os.path.join(out_dir, f_prompt))
        last_gen.astype("<f4").tofile(os.path.join(out_dir, f_gen))
        records.append({"prompt": prompt, "ids": ids, "greedy": gen,
                        "greedy_text": tok.decode(gen), "logits_prompt_last": f_prompt,
                        "logits_gen31": f_gen})
        print(f"prompt {i}: {len(ids)} ids, greedy {tok.decode(gen)!r}", flush=True)
    return records


@torch.no_grad()
def ppl_golden(tok, model, wikitext, ctx, windows):
    with open(wikitext, "rb") as fh:
        rows = fh.read().decode("utf-8").replace("\r", "").split("\n")
    text = "\n\n".join(r for r in rows if r != "")
    ids = tok.encode(text, add_special_tokens=False)
    nll, count, per_window = 0.0, 0, []
    for w in range(windows):
        chunk = ids[w * ctx:(w + 1) * ctx]
        logp = torch.log_softmax(torch.tensor(logits_of(model, chunk), dtype=torch.float64), -1)
        target = torch.tensor(chunk[1:])
        s = -logp[:-1].gather(1, target[:, None]).sum().item()
        per_window.append(s)
        nll += s
        count += len(chunk) - 1
        print(f"window {w}: nll {s:.4f}", flush=True)
    return {"ctx": ctx, "windows": windows, "text_tokens": len(ids), "scored_tokens": count,
            "nll_per_window": per_window, "ppl": math.exp(nll / count)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--wikitext", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--windows", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    tok, model = load(a.model)
    meta = {"model": os.path.basename(a.model), "torch": torch.__version__,
            "transformers": __import__("transformers").__version__, "dtype": "float32"}
    fwd = forward_golden(tok, model, a.out)
    with open(os.path.join(a.out, "forward.json"), "w") as fh:
        json.dump({"meta": meta, "n_vocab": int(model.config.vocab_size), "prompts": fwd}, fh,
                  indent=1)
    ppl = ppl_golden(tok, model, a.wikitext, a.ctx, a.windows)
    with open(os.path.join(a.out, "ppl.json"), "w") as fh:
        json.dump({"meta": meta, "joining": "CR stripped, rows joined with \"\\n\\n\"", **ppl}, fh,
                  indent=1)
    print(json.dumps(ppl))


if __name__ == "__main__":
    main()
