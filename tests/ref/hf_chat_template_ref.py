#!/usr/bin/env python3
"""hf_chat_template_ref.py — golden chat-template renderings from transformers' apply_chat_template.

Writes tests/data/golden/chat_templates.json, which test_srv_openai compares srv_chat_render with:
  templates  name -> Jinja text: "smollm2" read from the default model's GGUF
             (tokenizer.chat_template), plus the published ChatML (Qwen2), plain ChatML and
             Llama-3-Instruct templates; "qwen2_escaped" is Qwen2's with its newlines written as
             Jinja escapes (\\n), as some tokenizer_config.json files have them.
  cases      {template, bos_token, add_generation_prompt, messages, expected}

Usage: hf_chat_template_ref.py [--model FILE.gguf] [--out FILE]
Needs: transformers==5.24.0, gguf==0.19.0 (and the default model, scripts/fetch-model.sh).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
         "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CHATML_PLAIN = ("{% for message in messages %}"
                "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
          "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
          "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
          "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke.\nA short one."}],
    [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "ok"}],
    [{"role": "system", "content": "Only a system message."}],
    [{"role": "user", "content": "  h\u00e9llo \U0001F44B\n\n"},
     {"role": "assistant", "content": "\u3000\u2003\x1cwide spaces\x1f \t"},
     {"role": "user", "content": "literal <|im_end|> and <|eot_id|> inside"}],
    [{"role": "user", "content": ""}],
]


def gguf_template(path):
    from gguf import GGUFReader
    field = GGUFReader(path).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def main():
    default_model = os.path.join(os.environ.get("FLEXQ_CACHE", os.path.expanduser("~/.cache/flexq")),
                                 "SmolLM2-135M-Instruct.Q4_1.gguf")
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.environ.get("FLEXQ_MODEL", default_model))
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "golden", "chat_templates.json"))
    args = ap.parse_args()

    from transformers import AutoTokenizer
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(os.path.abspath(args.model), os.path.join(tmp, "model.gguf"))
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file="model.gguf")

    templates = {
        "smollm2": gguf_template(args.model),
        "qwen2": QWEN2,
        "qwen2_escaped": QWEN2.replace("\n", "\\n"),
        "chatml_plain": CHATML_PLAIN,
        "llama3": LLAMA3,
    }
    if tok.chat_template != templates["smollm2"]:
        sys.exit("transformers read another chat template from the GGUF than gguf did")
    bos = {"llama3": "<|begin_of_text|>"}
    cases = []
    for name, text in templates.items():
        for conv in CONVERSATIONS:
            for gen in (True, False):
                kwargs = {"bos_token": bos[name]} if name in bos else {}
                out = tok.apply_chat_template(conv, chat_template=text, tokenize=False,
                                              add_generation_prompt=gen, **kwargs)
                cases.append({"template": name, "bos_token": bos.get(name),
                              "add_generation_prompt": gen, "messages": conv, "expected": out})
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/ref/hf_chat_template_ref.py",
                   "transformers": __import__("transformers").__version__,
                   "templates": templates, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{args.out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
