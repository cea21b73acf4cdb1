#!/usr/bin/env python3
"""hf_tokenizer_ref.py — the HF `tokenizers` reference for flexq-tokenize, built from a GGUF file.

Builds a tokenizers.Tokenizer from the GGUF's tokenizer.ggml.* metadata the way the original
tokenizer.json of such a model is laid out:
  model          BPE(vocab, merges) with no unk token, no byte fallback; ignore_merges for llama3
  pre-tokenizer  by the GGUF's `pre` (or --pre):
                   gpt2    ByteLevel(add_prefix_space=False, use_regex=True)
                   smollm  Sequence[Digits(individual_digits=True), ByteLevel(as gpt2)]
                   llama3  Sequence[Split(LLAMA3_REGEX, "isolated"), ByteLevel(use_regex=False)]
  decoder        ByteLevel
  added tokens   token_type 3 (CONTROL) as AddedToken(special=True, normalized=False),
                 token_type 4 (USER_DEFINED) as AddedToken(special=False, normalized=True)
  post-processor BOS/EOS by tokenizer.ggml.add_bos_token / add_eos_token

Reads a file, splits it into lines exactly like `flexq-tokenize --lines` (split on b"\\n", a
trailing b"\\r" stripped, no line after a final b"\\n"; invalid UTF-8 decoded with
errors='replace') and prints one JSON array of ids per line.

Usage: hf_tokenizer_ref.py --model FILE.gguf [--pre NAME] [--no-special] TEXT_FILE
Needs: pip install tokenizers==0.23.3 gguf==0.19.0 numpy==2.4.6 (tests/ref/requirements.txt).
"""
import argparse
import json
import sys

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def read_gguf_tokenizer(path):
    """The tokenizer.ggml.* metadata of a GGUF file as a plain dict."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    return {
        "model": _field(r, "tokenizer.ggml.model"),
        "pre": _field(r, "tokenizer.ggml.pre", "gpt2"),
        "tokens": list(_field(r, "tokenizer.ggml.tokens")),
        "types": [int(t) for t in _field(r, "tokenizer.ggml.token_type")],
        "merges": list(_field(r, "tokenizer.ggml.merges", [])),
        "bos": _field(r, "tokenizer.ggml.bos_token_id"),
        "eos": _field(r, "tokenizer.ggml.eos_token_id"),
        "add_bos": bool(_field(r, "tokenizer.ggml.add_bos_token", False)),
        "add_eos": bool(_field(r, "tokenizer.ggml.add_eos_token", False)),
    }


# llama.cpp's names for the same pre-tokenizers in GGUF files.
PRE_ALIASES = {"gpt-2": "gpt2", "llama-bpe": "llama3", "llama-v3": "llama3"}


def pre_tokenizer(pre):
    from tokenizers import Regex, pre_tokenizers as pt

    pre = PRE_ALIASES.get(pre, pre)
    if pre == "gpt2":
        return pt.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        return pt.Sequence([pt.Digits(individual_digits=True),
                            pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre == "llama3":
        return pt.Sequence([pt.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
                            pt.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise ValueError(f"unsupported pre-tokenizer {pre!r}")


def build_tokenizer(meta, pre=None):
    """A tokenizers.Tokenizer equivalent to the GGUF's tokenizer description."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    if meta["model"] != "gpt2":
        raise ValueError(f"unsupported tokenizer model {meta['model']!r}")
    pre = PRE_ALIASES.get(pre or meta["pre"], pre or meta["pre"])
    vocab = {t: i for i, t in enumerate(meta["tokens"])}
    merges = [tuple(m.split(" ")) for m in meta["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=(pre == "llama3")))
    tok.pre_tokenizer = pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    tokens, types = meta["tokens"], meta["types"]
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i in range(len(tokens)) if types[i] == TOKEN_CONTROL])
    tok.add_tokens([AddedToken(tokens[i], special=False, normalized=True)
                    for i in range(len(tokens)) if types[i] == TOKEN_USER_DEFINED])
    single, specials = "$A", []
    if meta["add_bos"] and meta["bos"] is not None:
        bos = tokens[meta["bos"]]
        single, specials = f"{bos} {single}", specials + [(bos, meta["bos"])]
    if meta["add_eos"] and meta["eos"] is not None:
        eos = tokens[meta["eos"]]
        single, specials = f"{single} {eos}", specials + [(eos, meta["eos"])]
    if specials:
        tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=specials)
    return tok


def split_lines(data):
    """Lines of a byte string the way flexq-tokenize --lines splits them (bytes, CR stripped)."""
    lines = data.split(b"\n")
    if not data or data.endswith(b"\n"):
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def encode_lines(tok, lines, no_special=False):
    """Ids of each byte line, decoded as UTF-8 with errors='replace' first."""
    tok.encode_special_tokens = no_special
    texts = [ln.decode("utf-8", errors="replace") for ln in lines]
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=not no_special)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--pre", help="override the pre-tokenizer (gpt2, smollm, llama3)")
    ap.add_argument("--no-special", action="store_true", help="special-token text as plain text")
    ap.add_argument("file", help="text file to tokenize line by line")
    args = ap.parse_args()
    tok = build_tokenizer(read_gguf_tokenizer(args.model), args.pre)
    with open(args.file, "rb") as f:
        lines = split_lines(f.read())
    out = sys.stdout
    for ids in encode_lines(tok, lines, args.no_special):
        out.write(json.dumps(ids) + "\n")


if __name__ == "__main__":
    main()
