#!/usr/bin/env python3
"""hf_peer.py — the external peer of the end-to-end benchmark: HF transformers fp16 `generate` on
the same GPU with the same shapes, batch sizes and lengths as flexq-bench.

A LLaMA model of a preset's shapes with random fp16 weights (the same vocabulary as our synthetic
models: the default tokenizer's 49152 when that is larger) decodes B random prompts of --prompt
tokens for --output tokens, greedy, EOS ignored. Two settings: "plain" (dynamic cache, eager) and
"compiled" (static cache, which makes generate compile the forward with torch.compile
mode="reduce-overhead": the fastest setting transformers documents). Decode tokens/s = B * (output - 1) / (time of the run - time of a run
that stops after the first token); prefill tokens/s from --prefill-token prompts. One JSON object
per line on stdout: {"model", "mode": "hf_fp16" | "hf_fp16_plain", "batch", "decode_tok_s",
"prefill_tok_s", "weight_bytes", "setting", "torch", "transformers"}.
Usage: hf_peer.py --preset llama-2-7b [--batches 1,8,32,64] [--settings plain,compiled] ...
"""
import argparse
import json
import sys
import time

PRESETS = {
    "llama-2-7b": dict(n_layer=32, n_embd=4096, n_ff=11008, n_head=32, n_kv=32, vocab=32000),
    "llama-2-13b": dict(n_layer=40, n_embd=5120, n_ff=13824, n_head=40, n_kv=40, vocab=32000),
    "llama-3-8b": dict(n_layer=32, n_embd=4096, n_ff=14336, n_head=32, n_kv=8, vocab=128256),
}
DEFAULT_TOKENIZER_VOCAB = 49152  # what flexq-quant --synthetic gives these presets (fq_synth.h)


def build_model(preset, torch, transformers):
    p = PRESETS[preset]
    cfg = transformers.LlamaConfig(
        vocab_size=max(p["vocab"], DEFAULT_TOKENIZER_VOCAB), hidden_size=p["n_embd"],
        intermediate_size=p["n_ff"], num_hidden_layers=p["n_layer"],
        num_attention_heads=p["n_head"], num_key_value_heads=p["n_kv"],
        max_position_embeddings=4096, torch_dtype="float16")
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    for prm in model.parameters():  # about N(0, 0.02), as our synthetic weights
        prm.data.normal_(0.0, 0.02)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
    return model, cfg, weight_bytes


def timed_generate(model, torch, ids, new_tokens, static):
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
              pad_token_id=0)
    if static:
        kw["cache_implementation"] = "static"
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(model, torch, batch, prompt, output, static, vocab):
    g = torch.Generator(device="cuda").manual_seed(batch)
    ids = torch.randint(vocab // 8, vocab // 2, (batch, prompt), device="cuda", generator=g)
    timed_generate(model, torch, ids, output, static)  # warm-up (compiles for this shape)
    t_first = timed_generate(model, torch, ids, 1, static)
    t_all = timed_generate(model, torch, ids, output, static)
    return batch * (output - 1) / max(t_all - t_first, 1e-9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS))
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--output", type=int, default=256)
    ap.add_argument("--prefill", type=int, default=2048)
    ap.add_argument("--settings", default="plain,compiled")
    ap.add_argument("--compiled-batches", default="", help="batches for the compiled setting "
                    "(default: all)")
    a = ap.parse_args()
    import torch
    import transformers
    if not torch.cuda.is_available():
        print("hf_peer: no CUDA device", file=sys.stderr)
        return 1
    model, cfg, wbytes = build_model(a.preset, torch, transformers)
    batches = [int(b) for b in a.batches.split(",") if b]
    for setting in a.settings.split(","):
        static = setting == "compiled"
        if static:  # generate compiles the forward itself with a static cache (compile_config);
            # wrapping model.forward in torch.compile by hand breaks the cache under CUDA graphs
            if hasattr(transformers, "CompileConfig"):
                model.generation_config.compile_config = transformers.CompileConfig(
                    fullgraph=True, mode="reduce-overhead")
        sel = batches
        if static and a.compiled_batches:
            sel = [int(b) for b in a.compiled_batches.split(",") if b]
        g = torch.Generator(device="cuda").manual_seed(7)
        pre = torch.randint(cfg.vocab_size // 8, cfg.vocab_size // 2, (1, a.prefill),
                            device="cuda", generator=g)
        timed_generate(model, torch, pre, 1, False)
        t_pre = timed_generate(model, torch, pre, 1, False)
        for b in sel:
            t0 = time.time()
            dec = measure(model, torch, b, a.prompt, a.output, static, cfg.vocab_size)
            rec = {"model": a.preset, "mode": "hf_fp16" if static else "hf_fp16_plain",
                   "setting": "static cache, generate's torch.compile (reduce-overhead)" if static
                   else "dynamic cache, eager", "batch": b, "prompt": a.prompt,
                   "output": a.output, "decode_tok_s": round(dec, 2),
                   "prefill_tok_s": round(a.prefill / t_pre, 2), "weight_bytes": wbytes,
                   "torch": torch.__version__, "transformers": transformers.__version__,
                   "seconds": round(time.time() - t0, 1)}
            print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
