#!/usr/bin/env python3
"""test_serve_openai.py — flexq-serve on loopback with the default model, driven by the official
`openai` Python client (pinned in tests/requirements.txt) and by raw http.client requests.

Usage: test_serve_openai.py FLEXQ_SERVE [-k NAME ...]
Environment: FLEXQ_MODEL (the default model; skipped when missing), FLEXQ_KEEP_LOGS (keep the
daemon logs in /tmp).

Covers DESIGN §6 and the integration issue: completions (string, strings, token ids, n, greedy
repeatability, seed, stop strings that never leak, echo, logprobs), streaming completions (SSE
framing, [DONE] last, one chunk per token, usage chunk, same text as the non-streamed greedy
answer), chat (plain and streamed), models, tokenize/detokenize, every error status with its error
object, X-Request-Id, 32 parallel streaming clients, a client leaving mid-stream, a bad request
among good streams; with extra daemons: 413 with a small --max-body-bytes, 401 with --api-key
(health, ready and metrics open), 429 + Retry-After with a tiny queue, the SIGTERM drain (503 +
Retry-After on /ready and on new requests, the stream in flight finishes, exit 0) and a drain
timeout that aborts. Generation lengths stay short: the whole file runs in ~1-2 minutes on 2 cores.
Exit 0 = pass, 1 = fail, 77 = skipped (no model, no executable, or the openai package missing).
"""
import json
import os
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import serve_fixture as sf  # noqa: E402
from serve_fixture import check, check_eq, TestFailure  # noqa: E402

try:
    import openai
except ImportError:
    print("SKIP: the openai package is missing (pip install -r tests/requirements.txt)")
    sys.exit(sf.SKIP)

EXE = sf.serve_exe()
MODEL_FILE = sf.model_path()
MAX_MODEL_LEN = 512  # the main daemon runs with --max-model-len 512 (cheap context checks)

P_FRANCE = "The capital of France is"
P_STORY = "Once upon a time, in a small village,"
P_LIST = "Here is a list of fruits: apple, banana,"

S = None       # the main daemon
MODEL = None   # its served model id
_greedy = {}   # (prompt, max_tokens) -> greedy text (ignore_eos)


def expected_model_name():
    b = os.path.basename(MODEL_FILE.rstrip("/"))
    for ext in (".gguf", ".fq6.safetensors", ".safetensors"):
        if b.endswith(ext):
            return b[: -len(ext)]
    return b


def client(server=None, api_key="itest-unused-key", timeout=120):
    server = server or S
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=api_key, max_retries=0,
                         timeout=timeout)


def greedy(prompt, max_tokens=8):
    """Non-streamed greedy text of prompt with ignore_eos (cached)."""
    key = (prompt, max_tokens)
    if key not in _greedy:
        st, _, j = S.post_json("/v1/completions", {
            "model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True})
        check_eq(st, 200, f"greedy completion status (body {j})")
        _greedy[key] = j["choices"][0]["text"]
    return _greedy[key]


def expect_error(st, hdrs, j, status, param=None, etype=None, code=None, what=""):
    """Status and the OpenAI error object {"error": {message, type, param, code}}."""
    check(st == status, f"{what}: status {st}, want {status}; body {j}")
    check(isinstance(j, dict) and isinstance(j.get("error"), dict),
          f"{what}: body is not an error object: {j!r}")
    e = j["error"]
    for k in ("message", "type", "param", "code"):
        check(k in e, f"{what}: error object lacks {k!r}: {e}")
    check(isinstance(e["message"], str) and e["message"], f"{what}: empty message: {e}")
    want_type = etype or {400: "invalid_request_error", 401: "authentication_error",
                          404: "not_found_error", 405: "invalid_request_error",
                          413: "invalid_request_error", 429: "rate_limit_error",
                          503: "service_unavailable_error"}.get(status)
    if want_type:
        check_eq(e["type"], want_type, f"{what}: error.type")
    if param is not None:
        check_eq(e["param"], param, f"{what}: error.param (message {e['message']!r})")
    if code is not None:
        check_eq(e["code"], code, f"{what}: error.code (message {e['message']!r})")
    check("application/json" in hdrs.get("content-type", ""),
          f"{what}: content-type {hdrs.get('content-type')!r}")
    return e


def check_retry_after(hdrs, what):
    ra = hdrs.get("retry-after")
    check(ra is not None, f"{what}: no Retry-After header (headers {hdrs})")
    check(re.fullmatch(r"\d+", ra.strip()) is not None,
          f"{what}: Retry-After {ra!r} is not a number of seconds")


def token_chunk_count(choice_chunks):
    """Chunks that carry a token: every choice chunk before the finish, plus the finishing chunk
    when it carries text (some servers put the last token there, others send an empty one)."""
    n = sum(1 for c in choice_chunks if c["choices"][0].get("finish_reason") is None)
    last = choice_chunks[-1]["choices"][0] if choice_chunks else None
    if last is not None and last.get("finish_reason") is not None and last.get("text"):
        n += 1
    return n


def metric_sum(text, name, **labels):
    """Sum of the samples of metric `name` whose labels include `labels`; None if absent."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^([^\s{]+)(\{([^}]*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
            found = True
    return total if found else None


# ---------------------------------------------------------------- operations and models


def test_health_ready():
    for path in ("/health", "/ready"):
        st, _, _ = S.request("GET", path)
        check_eq(st, 200, f"GET {path}")


def test_models():
    st, _, j = S.get_json("/v1/models")
    check_eq(st, 200, "GET /v1/models status")
    check_eq(j.get("object"), "list", "models object")
    check_eq(len(j.get("data", [])), 1, "number of models")
    m = j["data"][0]
    check_eq(m.get("id"), expected_model_name(), "model id (basename of the model file)")
    check_eq(m.get("object"), "model", "model object")
    check_eq(m.get("max_model_len"), MAX_MODEL_LEN, "max_model_len (--max-model-len 512)")
    check(isinstance(m.get("created"), int), f"created is not an int: {m}")
    check(isinstance(m.get("owned_by"), str), f"owned_by is not a string: {m}")
    ids = [x.id for x in client().models.list()]
    check_eq(ids, [expected_model_name()], "openai client models.list()")


# ---------------------------------------------------------------- completions


def test_completion_string():
    c = client()
    r = c.completions.create(model=MODEL, prompt=P_FRANCE, max_tokens=8, temperature=0)
    check(r.id.startswith("cmpl-"), f"id {r.id!r} does not start with cmpl-")
    check_eq(r.object, "text_completion", "object")
    check_eq(r.model, MODEL, "model")
    check_eq(len(r.choices), 1, "choices")
    ch = r.choices[0]
    check_eq(ch.index, 0, "choice index")
    check(isinstance(ch.text, str) and ch.text, f"empty text: {ch.text!r}")
    check(ch.finish_reason in ("stop", "length"), f"finish_reason {ch.finish_reason!r}")
    u = r.usage
    check_eq(u.prompt_tokens, len(S.tokenize(P_FRANCE)), "usage.prompt_tokens vs /tokenize")
    check(1 <= u.completion_tokens <= 8, f"completion_tokens {u.completion_tokens} not in 1..8")
    if ch.finish_reason == "length":
        check_eq(u.completion_tokens, 8, "completion_tokens with finish_reason length")
    check_eq(u.total_tokens, u.prompt_tokens + u.completion_tokens, "total_tokens")
    # the default max_tokens is 16
    r = c.completions.create(model=MODEL, prompt=P_STORY, temperature=0,
                             extra_body={"ignore_eos": True})
    check_eq(r.usage.completion_tokens, 16, "completion_tokens with max_tokens not given")
    check_eq(r.choices[0].finish_reason, "length", "finish_reason with max_tokens not given")


def test_completion_greedy_repeatable():
    c = client()
    texts = [c.completions.create(model=MODEL, prompt=P_STORY, max_tokens=10, temperature=0,
                                  extra_body={"ignore_eos": True}).choices[0].text
             for _ in range(3)]
    check(len(set(texts)) == 1, f"temperature 0 gave different texts: {texts}")
    check_eq(texts[0], greedy(P_STORY, 10), "greedy text vs the raw request's")
    # top_k 1 at temperature 1 is greedy too
    r = c.completions.create(model=MODEL, prompt=P_STORY, max_tokens=10, temperature=1.0,
                             extra_body={"ignore_eos": True, "top_k": 1})
    check_eq(r.choices[0].text, texts[0], "top_k=1 text vs temperature 0 text")


def test_completion_prompt_list():
    c = client()
    prompts = [P_FRANCE, P_STORY]
    r = c.completions.create(model=MODEL, prompt=prompts, max_tokens=8, temperature=0,
                             extra_body={"ignore_eos": True})
    check_eq(len(r.choices), 2, "choices for two prompts")
    check_eq(sorted(ch.index for ch in r.choices), [0, 1], "choice indexes")
    by = {ch.index: ch for ch in r.choices}
    for i, p in enumerate(prompts):
        check_eq(by[i].text, greedy(p, 8), f"choice {i} (prompt {p!r}) vs the same prompt alone")
        check_eq(by[i].finish_reason, "length", f"choice {i} finish_reason")
    want_prompt = sum(len(S.tokenize(p)) for p in prompts)
    check_eq(r.usage.prompt_tokens, want_prompt, "usage.prompt_tokens (sum over prompts)")
    check_eq(r.usage.completion_tokens, 16, "usage.completion_tokens (2 x 8)")


def test_completion_token_ids():
    c = client()
    ids = S.tokenize(P_FRANCE)
    check(all(isinstance(t, int) for t in ids) and ids, f"/tokenize ids {ids}")
    r = c.completions.create(model=MODEL, prompt=ids, max_tokens=8, temperature=0,
                             extra_body={"ignore_eos": True})
    check_eq(r.choices[0].text, greedy(P_FRANCE, 8), "token-id prompt vs text prompt")
    check_eq(r.usage.prompt_tokens, len(ids), "usage.prompt_tokens for a token-id prompt")
    ids2 = S.tokenize(P_STORY)
    r = c.completions.create(model=MODEL, prompt=[ids, ids2], max_tokens=8, temperature=0,
                             extra_body={"ignore_eos": True})
    by = {ch.index: ch.text for ch in r.choices}
    check_eq(by, {0: greedy(P_FRANCE, 8), 1: greedy(P_STORY, 8)}, "two token-id prompts")
    check_eq(r.usage.prompt_tokens, len(ids) + len(ids2), "usage.prompt_tokens, two id prompts")


def test_completion_n2_and_seed():
    c = client()
    kw = dict(model=MODEL, prompt=P_STORY, max_tokens=6, temperature=1.0, n=2, seed=1234,
              extra_body={"ignore_eos": True})
    r1 = c.completions.create(**kw)
    check_eq(sorted(ch.index for ch in r1.choices), [0, 1], "n=2 choice indexes")
    check_eq(r1.usage.prompt_tokens, len(S.tokenize(P_STORY)),
             "usage.prompt_tokens with n=2 (the prompt counted once)")
    check_eq(r1.usage.completion_tokens, 12, "usage.completion_tokens with n=2 (2 x 6)")
    r2 = c.completions.create(**kw)
    t1 = {ch.index: ch.text for ch in r1.choices}
    t2 = {ch.index: ch.text for ch in r2.choices}
    check_eq(t2, t1, "same seed, same request: texts")
    # a single seeded sample is reproducible too
    kw1 = dict(model=MODEL, prompt=P_LIST, max_tokens=10, temperature=1.2, seed=42,
               extra_body={"ignore_eos": True})
    a = c.completions.create(**kw1).choices[0].text
    b = c.completions.create(**kw1).choices[0].text
    check_eq(b, a, "seed 42 twice")


def _tokens_of(prompt, max_tokens):
    """(text, tokens) of the greedy completion, tokens from logprobs."""
    st, _, j = S.post_json("/v1/completions", {
        "model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": True, "logprobs": 0})
    check_eq(st, 200, f"completion with logprobs 0 ({j})")
    ch = j["choices"][0]
    return ch["text"], ch["logprobs"]["tokens"]


def test_completion_stop_strings():
    text, toks = _tokens_of(P_STORY, 16)
    check_eq(text, greedy(P_STORY, 16), "text with logprobs vs without")
    # a stop string that spans a token boundary, in the middle of the completion
    stop = None
    for j in range(2, len(toks) - 2):
        a, b = toks[j], toks[j + 1]
        if a.isascii() and b.isascii() and len(a.strip()) >= 1 and len(b.strip()) >= 1:
            cand = a[-2:] + b[:2]
            if text.find(cand) > 0:
                stop = cand
                break
    if stop is None:
        raise TestFailure(f"no usable stop string in the greedy text {text!r} (tokens {toks})")
    want = text[: text.find(stop)]
    c = client()
    r = c.completions.create(model=MODEL, prompt=P_STORY, max_tokens=16, temperature=0,
                             stop=[stop, "QQQ-never-QQQ"], extra_body={"ignore_eos": True})
    ch = r.choices[0]
    check(stop not in ch.text, f"stop string {stop!r} leaked into the text {ch.text!r}")
    check_eq(ch.text, want, f"text up to the stop string {stop!r} (full greedy text {text!r})")
    check_eq(ch.finish_reason, "stop", "finish_reason after a stop string")
    check(r.usage.completion_tokens < 16, f"completion_tokens {r.usage.completion_tokens}")
    # streamed: no delta holds any of the stop string's text past the cut
    res = sf.stream_post(S, "/v1/completions", {
        "model": MODEL, "prompt": P_STORY, "max_tokens": 16, "temperature": 0, "stream": True,
        "stop": stop, "ignore_eos": True})
    check_eq(res.status, 200, f"streamed stop status ({res.body[:300]!r})")
    check(not res.problems, f"SSE problems: {res.problems}")
    chunks = [c for c in res.chunks() if c.get("choices")]
    streamed = "".join(c["choices"][0].get("text", "") for c in chunks)
    check_eq(streamed, want, f"streamed text up to the stop string {stop!r}")
    check_eq(chunks[-1]["choices"][0].get("finish_reason"), "stop", "streamed finish_reason")
    # a stop string that never appears: finish_reason length, whole text
    r = c.completions.create(model=MODEL, prompt=P_STORY, max_tokens=16, temperature=0,
                             stop="QQQ-never-QQQ", extra_body={"ignore_eos": True})
    check_eq((r.choices[0].text, r.choices[0].finish_reason), (text, "length"),
             "an absent stop string")


def test_completion_echo():
    c = client()
    r = c.completions.create(model=MODEL, prompt=P_FRANCE, max_tokens=4, temperature=0,
                             echo=True, extra_body={"ignore_eos": True})
    check_eq(r.choices[0].text, P_FRANCE + greedy(P_FRANCE, 4), "echo text = prompt + completion")
    r = c.completions.create(model=MODEL, prompt=P_FRANCE, max_tokens=0, echo=True)
    check_eq(r.choices[0].text, P_FRANCE, "echo with max_tokens 0")
    check_eq(r.usage.completion_tokens, 0, "completion_tokens with max_tokens 0")


def test_completion_logprobs():
    c = client()
    r = c.completions.create(model=MODEL, prompt=P_FRANCE, max_tokens=6, temperature=0,
                             logprobs=2, extra_body={"ignore_eos": True})
    ch = r.choices[0]
    lp = ch.logprobs
    check(lp is not None, "logprobs is null")
    n = r.usage.completion_tokens
    check_eq(n, 6, "completion_tokens")
    for field in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        check_eq(len(getattr(lp, field) or []), n, f"len(logprobs.{field})")
    check_eq("".join(lp.tokens), ch.text, "joined logprobs.tokens vs text")
    for i in range(n):
        v = lp.token_logprobs[i]
        check(isinstance(v, float) and v <= 1e-6, f"token_logprobs[{i}] = {v!r}")
        top = lp.top_logprobs[i]
        check(1 <= len(top) <= 3, f"top_logprobs[{i}] has {len(top)} entries: {top}")
        best = max(top.values())
        check(abs(best - v) < 1e-3, f"greedy token {i} logprob {v} is not the best {best} ({top})")
    check_eq(lp.text_offset[0], 0, "text_offset[0]")
    check(all(a <= b for a, b in zip(lp.text_offset, lp.text_offset[1:])),
          f"text_offset not increasing: {lp.text_offset}")
    r2 = c.completions.create(model=MODEL, prompt=P_FRANCE, max_tokens=6, temperature=0,
                              extra_body={"ignore_eos": True})
    check(r2.choices[0].logprobs is None, f"logprobs not null when not asked for: "
          f"{r2.choices[0].logprobs}")


# ---------------------------------------------------------------- streaming completions


def test_stream_completion_raw():
    body = {"model": MODEL, "prompt": P_FRANCE, "max_tokens": 8, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
    res = sf.stream_post(S, "/v1/completions", body)
    check_eq(res.status, 200, f"status ({res.body[:300]!r})")
    check("text/event-stream" in res.headers.get("content-type", ""),
          f"content-type {res.headers.get('content-type')!r}")
    check(not res.problems, f"SSE framing problems: {res.problems}")
    chunks = res.chunks()
    check(len(chunks) >= 2, f"only {len(chunks)} chunks")
    usage_chunk = chunks[-1]
    check_eq(usage_chunk.get("choices"), [], "the last chunk before [DONE] (usage) choices")
    u = usage_chunk.get("usage") or {}
    choice_chunks = chunks[:-1]
    ids = {c.get("id") for c in chunks}
    check(len(ids) == 1 and next(iter(ids)).startswith("cmpl-"), f"chunk ids {ids}")
    for i, c in enumerate(choice_chunks):
        check_eq(c.get("object"), "text_completion", f"chunk {i} object")
        check_eq(len(c.get("choices", [])), 1, f"chunk {i} choices")
        check("usage" in c and c["usage"] is None, f"chunk {i}: usage should be null: {c}")
        fr = c["choices"][0].get("finish_reason")
        if i < len(choice_chunks) - 1:
            check(fr is None, f"chunk {i} of {len(choice_chunks)}: finish_reason {fr!r} early")
    check_eq(choice_chunks[-1]["choices"][0].get("finish_reason"), "length", "final finish_reason")
    text = "".join(c["choices"][0].get("text", "") for c in choice_chunks)
    check_eq(text, greedy(P_FRANCE, 8), "streamed text vs non-streamed greedy text")
    check_eq(u.get("prompt_tokens"), len(S.tokenize(P_FRANCE)), "usage.prompt_tokens")
    check_eq(u.get("completion_tokens"), 8, "usage.completion_tokens")
    check_eq(u.get("total_tokens"), u.get("prompt_tokens", 0) + 8, "usage.total_tokens")
    check_eq(token_chunk_count(choice_chunks), 8, "chunks carrying a token (one per token)")
    # without include_usage: no usage chunk, no usage key with a value
    body2 = dict(body)
    del body2["stream_options"]
    res = sf.stream_post(S, "/v1/completions", body2)
    check(not res.problems, f"SSE problems without include_usage: {res.problems}")
    for c in res.chunks():
        check(c.get("choices"), f"a chunk without choices without include_usage: {c}")
        check(c.get("usage") is None, f"usage without include_usage: {c}")


def test_stream_completion_openai():
    c = client()
    stream = c.completions.create(model=MODEL, prompt=P_STORY, max_tokens=10, temperature=0,
                                  stream=True, stream_options={"include_usage": True},
                                  extra_body={"ignore_eos": True})
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            text += ch.text or ""
            finish = ch.finish_reason or finish
    check_eq(text, greedy(P_STORY, 10), "openai-client streamed text vs greedy")
    check_eq(finish, "length", "finish_reason")
    check(usage is not None, "no usage chunk")
    check_eq((usage.prompt_tokens, usage.completion_tokens),
             (len(S.tokenize(P_STORY)), 10), "usage (prompt, completion)")


def test_stream_n2():
    body = {"model": MODEL, "prompt": [P_FRANCE, P_STORY], "max_tokens": 5, "temperature": 0,
            "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
    res = sf.stream_post(S, "/v1/completions", body)
    check_eq(res.status, 200, "status")
    check(not res.problems, f"SSE problems: {res.problems}")
    texts, finish = {}, {}
    for c in res.chunks():
        for ch in c.get("choices", []):
            texts[ch["index"]] = texts.get(ch["index"], "") + ch.get("text", "")
            if ch.get("finish_reason"):
                finish[ch["index"]] = ch["finish_reason"]
    check_eq(texts, {0: greedy(P_FRANCE, 5), 1: greedy(P_STORY, 5)}, "streamed texts per index")
    check_eq(finish, {0: "length", 1: "length"}, "finish_reason per index")
    u = res.chunks()[-1].get("usage") or {}
    check_eq(u.get("completion_tokens"), 10, "usage.completion_tokens for 2 prompts x 5")


# ---------------------------------------------------------------- chat


CHAT_MSGS = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def test_chat():
    c = client()
    r = c.chat.completions.create(model=MODEL, messages=CHAT_MSGS, max_tokens=12, temperature=0)
    check(r.id.startswith("chatcmpl-"), f"id {r.id!r}")
    check_eq(r.object, "chat.completion", "object")
    ch = r.choices[0]
    check_eq(ch.message.role, "assistant", "message.role")
    check(isinstance(ch.message.content, str) and ch.message.content.strip(),
          f"content {ch.message.content!r}")
    check(ch.finish_reason in ("stop", "length"), f"finish_reason {ch.finish_reason!r}")
    check("<|im_end|>" not in ch.message.content and "<|im_start|>" not in ch.message.content,
          f"special tokens in the content: {ch.message.content!r}")
    want_prompt = len(S.tokenize(messages=CHAT_MSGS))
    check_eq(r.usage.prompt_tokens, want_prompt, "usage.prompt_tokens vs /tokenize messages")
    check(1 <= r.usage.completion_tokens <= 12, f"completion_tokens {r.usage.completion_tokens}")
    r2 = c.chat.completions.create(model=MODEL, messages=CHAT_MSGS, max_tokens=12, temperature=0)
    check_eq(r2.choices[0].message.content, ch.message.content, "greedy chat twice")
    # a system message and an assistant turn; max_completion_tokens
    msgs = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Again, please."}]
    r3 = c.chat.completions.create(model=MODEL, messages=msgs, max_completion_tokens=6,
                                   temperature=0)
    check(r3.usage.completion_tokens <= 6, f"max_completion_tokens 6: {r3.usage}")
    check_eq(r3.usage.prompt_tokens, len(S.tokenize(messages=msgs)), "prompt_tokens, 4 messages")


def test_chat_stream():
    ref = client().chat.completions.create(model=MODEL, messages=CHAT_MSGS, max_tokens=12,
                                           temperature=0)
    body = {"model": MODEL, "messages": CHAT_MSGS, "max_tokens": 12, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    res = sf.stream_post(S, "/v1/chat/completions", body)
    check_eq(res.status, 200, f"status ({res.body[:300]!r})")
    check(not res.problems, f"SSE problems: {res.problems}")
    chunks = res.chunks()
    check_eq(chunks[-1].get("choices"), [], "usage chunk choices")
    u = chunks[-1].get("usage") or {}
    cc = chunks[:-1]
    for i, c in enumerate(cc):
        check_eq(c.get("object"), "chat.completion.chunk", f"chunk {i} object")
        check(c["id"].startswith("chatcmpl-"), f"chunk {i} id {c['id']!r}")
    first = cc[0]["choices"][0]["delta"]
    check_eq(first.get("role"), "assistant", "the first chunk's delta.role")
    check(first.get("content") in (None, ""), f"the first chunk carries content: {first}")
    for i, c in enumerate(cc[1:], 1):
        check("role" not in c["choices"][0]["delta"], f"chunk {i} repeats the role: {c}")
    last = cc[-1]["choices"][0]
    check(last.get("finish_reason") in ("stop", "length"), f"last finish_reason {last}")
    for i, c in enumerate(cc[:-1]):
        check(c["choices"][0].get("finish_reason") is None, f"chunk {i} finish_reason early: {c}")
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in cc)
    check_eq(content, ref.choices[0].message.content, "streamed chat content vs non-streamed")
    check_eq(last["finish_reason"], ref.choices[0].finish_reason, "finish_reason vs non-streamed")
    check_eq((u.get("prompt_tokens"), u.get("completion_tokens")),
             (ref.usage.prompt_tokens, ref.usage.completion_tokens), "usage vs non-streamed")
    # openai client's stream
    s = client().chat.completions.create(model=MODEL, messages=CHAT_MSGS, max_tokens=12,
                                         temperature=0, stream=True)
    got = "".join((ch.choices[0].delta.content or "") for ch in s if ch.choices)
    check_eq(got, ref.choices[0].message.content, "openai-client streamed chat content")


# ---------------------------------------------------------------- tokenize


def test_tokenize_roundtrip():
    text = "Hello, world! Ünïcødé — 日本語 🙂\n\ttabs   and  spaces 12345"
    st, _, j = S.post_json("/tokenize", {"model": MODEL, "prompt": text,
                                         "add_special_tokens": False})
    check_eq(st, 200, f"/tokenize status ({j})")
    toks = j.get("tokens")
    check(isinstance(toks, list) and toks and all(isinstance(t, int) for t in toks),
          f"tokens {toks}")
    check_eq(j.get("count"), len(toks), "count")
    check_eq(j.get("max_model_len"), MAX_MODEL_LEN, "max_model_len")
    st, _, j2 = S.post_json("/detokenize", {"model": MODEL, "tokens": toks})
    check_eq(st, 200, f"/detokenize status ({j2})")
    check_eq(j2.get("prompt"), text, "detokenize(tokenize(text))")
    st, h, j3 = S.post_json("/detokenize", {"model": MODEL, "tokens": [0, 10 ** 7]})
    expect_error(st, h, j3, 400, what="/detokenize with an id out of the vocabulary")


# ---------------------------------------------------------------- errors


def post_raw(path, body, headers=None):
    hd = {"Content-Type": "application/json"}
    hd.update(headers or {})
    st, h, data = S.request("POST", path, body, hd)
    return st, h, sf.parse_json(data)


def test_error_bad_json():
    for path in ("/v1/completions", "/v1/chat/completions"):
        st, h, j = post_raw(path, '{"model": "x", "prompt": ')
        expect_error(st, h, j, 400, what=f"truncated JSON on {path}")
        st, h, j = post_raw(path, "[1, 2, 3]")
        expect_error(st, h, j, 400, what=f"a JSON array on {path}")
        st, h, j = post_raw(path, "")
        expect_error(st, h, j, 400, what=f"an empty body on {path}")


def test_error_wrong_types():
    cases = [
        ("/v1/completions", {"prompt": "hi", "max_tokens": "8"}, "max_tokens"),
        ("/v1/completions", {"prompt": 5}, "prompt"),
        ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, "temperature"),
        ("/v1/completions", {"prompt": "hi", "stream": "yes"}, "stream"),
        ("/v1/completions", {"prompt": "hi", "stop": 3}, "stop"),
        ("/v1/completions", {"prompt": "hi", "n": 1.5}, "n"),
        ("/v1/chat/completions", {"messages": "hi"}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]},
         "messages[0].content"),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]},
         "messages[0].role"),
    ]
    for path, body, param in cases:
        body = dict(body, model=MODEL)
        st, h, j = post_raw(path, body)
        expect_error(st, h, j, 400, param=param, what=f"{path} {json.dumps(body)}")
    st, h, j = post_raw("/v1/completions", {"model": MODEL, "max_tokens": 2})
    expect_error(st, h, j, 400, param="prompt", what="completion without a prompt")
    try:
        client().completions.create(model=MODEL, prompt="hi", max_tokens=2,
                                    extra_body={"temperature": "hot"})
        raise TestFailure("a string temperature was accepted")
    except openai.BadRequestError as e:
        check_eq(e.param, "temperature", "openai BadRequestError.param")


def test_error_out_of_range():
    cases = [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": 0}, "top_p"),
        ({"n": 0}, "n"),
        ({"n": 17}, "n"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"logprobs": 21}, "logprobs"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ]
    for extra, param in cases:
        body = dict({"model": MODEL, "prompt": "hi", "max_tokens": 2}, **extra)
        st, h, j = post_raw("/v1/completions", body)
        expect_error(st, h, j, 400, param=param, what=f"completions {json.dumps(extra)}")
    st, h, j = post_raw("/v1/completions", {"model": MODEL, "prompt": [1, 2, 10 ** 7],
                                            "max_tokens": 2})
    e = expect_error(st, h, j, 400, what="a prompt token id beyond the vocabulary")
    check(str(e.get("param") or "").startswith("prompt"), f"param {e.get('param')!r}")
    st, h, j = post_raw("/v1/chat/completions", {"model": MODEL, "messages": CHAT_MSGS,
                                                 "temperature": 3})
    expect_error(st, h, j, 400, param="temperature", what="chat temperature 3")
    try:
        client().completions.create(model=MODEL, prompt="hi", max_tokens=2, n=0)
        raise TestFailure("n=0 was accepted")
    except openai.BadRequestError as e:
        check_eq(e.param, "n", "openai BadRequestError.param for n=0")


def test_error_context_too_long():
    n_prompt = len(S.tokenize(P_FRANCE))
    mt = MAX_MODEL_LEN - n_prompt + 1
    st, h, j = post_raw("/v1/completions", {"model": MODEL, "prompt": P_FRANCE, "max_tokens": mt})
    e = expect_error(st, h, j, 400, code="context_length_exceeded",
                     what=f"prompt {n_prompt} + max_tokens {mt} > {MAX_MODEL_LEN}")
    for num in (MAX_MODEL_LEN, n_prompt, mt):
        check(re.search(rf"\b{num}\b", e["message"]), f"message lacks the number {num}: "
              f"{e['message']!r}")
    check(e.get("param") is not None, f"param is null: {e}")
    # exactly the context: accepted (checked without generating: max_tokens fits, prompt + max
    # = max_model_len is allowed); a prompt alone longer than the context:
    long_prompt = "word " * (MAX_MODEL_LEN + 50)
    n_long = len(S.tokenize(long_prompt))
    check(n_long > MAX_MODEL_LEN, f"long prompt has only {n_long} tokens")
    st, h, j = post_raw("/v1/completions", {"model": MODEL, "prompt": long_prompt,
                                            "max_tokens": 1})
    e = expect_error(st, h, j, 400, code="context_length_exceeded", what="prompt over the context")
    check(re.search(rf"\b{n_long}\b", e["message"]) and
          re.search(rf"\b{MAX_MODEL_LEN}\b", e["message"]),
          f"message lacks {n_long} or {MAX_MODEL_LEN}: {e['message']!r}")
    msgs = [{"role": "user", "content": long_prompt}]
    st, h, j = post_raw("/v1/chat/completions", {"model": MODEL, "messages": msgs,
                                                 "max_tokens": 1})
    expect_error(st, h, j, 400, code="context_length_exceeded", what="chat over the context")
    try:
        client().completions.create(model=MODEL, prompt=P_FRANCE, max_tokens=mt)
        raise TestFailure("max_tokens over the context accepted through the client")
    except openai.BadRequestError as ex:
        check_eq(ex.code, "context_length_exceeded", "openai BadRequestError.code")


def test_error_unknown_model():
    st, h, j = post_raw("/v1/completions", {"model": "no-such-model", "prompt": "hi"})
    expect_error(st, h, j, 404, code="model_not_found", what="completions, unknown model")
    st, h, j = post_raw("/v1/chat/completions", {"model": "no-such-model", "messages": CHAT_MSGS})
    expect_error(st, h, j, 404, code="model_not_found", what="chat, unknown model")
    try:
        client().completions.create(model="no-such-model", prompt="hi", max_tokens=2)
        raise TestFailure("unknown model accepted through the client")
    except openai.NotFoundError as e:
        check_eq(e.code, "model_not_found", "openai NotFoundError.code")


def test_error_method_and_path():
    for method, path, allow in (("GET", "/v1/completions", "POST"),
                                ("PUT", "/v1/chat/completions", "POST"),
                                ("DELETE", "/v1/models", "GET"),
                                ("POST", "/health", "GET")):
        st, h, data = S.request(method, path, "" if method in ("PUT", "POST") else None)
        j = sf.parse_json(data)
        expect_error(st, h, j, 405, what=f"{method} {path}")
        check(allow in (h.get("allow") or ""), f"{method} {path}: Allow {h.get('allow')!r} "
              f"lacks {allow}")
    st, h, data = S.request("GET", "/v1/no-such-endpoint")
    expect_error(st, h, sf.parse_json(data), 404, what="GET /v1/no-such-endpoint")


def test_unknown_fields_ignored():
    st, _, j = post_raw("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2,
                                            "frobnicate": {"x": [1, 2]}, "user": "itest"})
    check_eq(st, 200, f"unknown fields: status ({j})")


def test_request_id():
    rid = "itest-42.a:b_c"
    for method, path, body in (("GET", "/health", None), ("GET", "/v1/models", None),
                               ("POST", "/v1/completions",
                                {"model": MODEL, "prompt": "hi", "max_tokens": 1}),
                               ("POST", "/v1/completions", "{bad json")):
        st, h, _ = S.request(method, path, body, {"X-Request-Id": rid,
                                                  "Content-Type": "application/json"})
        check_eq(h.get("x-request-id"), rid, f"X-Request-Id echoed on {method} {path} ({st})")
    res = sf.stream_post(S, "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2,
                                                "stream": True}, headers={"X-Request-Id": rid})
    check_eq(res.headers.get("x-request-id"), rid, "X-Request-Id echoed on a stream")
    st, h, _ = S.request("GET", "/health")
    check(h.get("x-request-id"), f"no generated X-Request-Id: {h}")
    st, h, _ = S.request("GET", "/health", headers={"X-Request-Id": "bad id with spaces"})
    check(h.get("x-request-id") and h.get("x-request-id") != "bad id with spaces",
          f"an invalid request id was echoed or none generated: {h.get('x-request-id')!r}")
    r = client().completions.with_raw_response.create(
        model=MODEL, prompt="hi", max_tokens=1, extra_headers={"X-Request-Id": rid})
    check_eq(r.headers.get("x-request-id"), rid, "X-Request-Id through the openai client")


# ---------------------------------------------------------------- concurrency and robustness


def _stream_worker(body, out, idx, timeout=240):
    try:
        out[idx] = sf.stream_post(S, "/v1/completions", body, timeout=timeout)
    except Exception as e:  # noqa: BLE001
        out[idx] = e


def test_concurrency_32_streams():
    n = 32
    prompts = [f"Item {i}: the color of the sky is" for i in range(n)]
    want_prompt = [len(S.tokenize(p)) for p in prompts]
    out = [None] * n
    ths = [threading.Thread(target=_stream_worker, args=(
        {"model": MODEL, "prompt": prompts[i], "max_tokens": 6, "temperature": 0.7, "seed": i,
         "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True},
        out, i)) for i in range(n)]
    t0 = time.monotonic()
    for t in ths:
        t.start()
    for t in ths:
        t.join(timeout=max(1.0, 300 - (time.monotonic() - t0)))
    bad = []
    for i, res in enumerate(out):
        if res is None:
            bad.append(f"client {i}: did not finish within 300 s")
            continue
        if isinstance(res, Exception):
            bad.append(f"client {i}: {type(res).__name__}: {res}")
            continue
        if res.status != 200:
            bad.append(f"client {i}: status {res.status} {res.body[:200]!r}")
            continue
        if res.problems:
            bad.append(f"client {i}: SSE problems {res.problems}")
            continue
        chunks = res.chunks()
        u = chunks[-1].get("usage") or {}
        cc = [c for c in chunks if c.get("choices")]
        ntok = token_chunk_count(cc)
        if u.get("prompt_tokens") != want_prompt[i]:
            bad.append(f"client {i}: prompt_tokens {u.get('prompt_tokens')}, /tokenize says "
                       f"{want_prompt[i]}")
        if u.get("completion_tokens") != 6 or ntok != 6:
            bad.append(f"client {i}: completion_tokens {u.get('completion_tokens')}, token "
                       f"chunks {ntok}, want 6 and 6")
        if not cc or cc[-1]["choices"][0].get("finish_reason") != "length":
            bad.append(f"client {i}: finish_reason "
                       f"{cc[-1]['choices'][0].get('finish_reason') if cc else None}")
    print(f"  32 streams done in {time.monotonic() - t0:.1f} s")
    check(not bad, f"{len(bad)} of {n} clients wrong:\n    " + "\n    ".join(bad[:12]))


def test_bad_request_amid_streams():
    prompts = [P_FRANCE, P_STORY, P_LIST]
    want = [greedy(p, 12) for p in prompts]
    out = [None] * len(prompts)
    started = [threading.Event() for _ in prompts]

    def worker(i):
        try:
            out[i] = sf.stream_post(S, "/v1/completions", {
                "model": MODEL, "prompt": prompts[i], "max_tokens": 12, "temperature": 0,
                "stream": True, "ignore_eos": True},
                on_event=lambda k, _e: started[i].set(), timeout=120)
        except Exception as e:  # noqa: BLE001
            out[i] = e
        started[i].set()

    ths = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in ths:
        t.start()
    for e in started:
        e.wait(timeout=60)
    bad_results = []
    for path, body, status in (
            ("/v1/completions", "{not json", 400),
            ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": "many"}, 400),
            ("/v1/completions", {"model": MODEL, "prompt": "x", "temperature": 9}, 400),
            ("/v1/completions", {"model": MODEL, "prompt": "word " * 600, "max_tokens": 1}, 400),
            ("/v1/completions", {"model": "other", "prompt": "x"}, 404),
            ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": 1}]}, 400)):
        st, _, _ = post_raw(path, body)
        if st != status:
            bad_results.append(f"{path} {str(body)[:60]}: {st}, want {status}")
    st, _, _ = S.request("GET", "/v1/completions")
    if st != 405:
        bad_results.append(f"GET /v1/completions: {st}, want 405")
    for t in ths:
        t.join(timeout=150)
    check(not bad_results, "bad requests during streams: " + "; ".join(bad_results))
    for i, res in enumerate(out):
        check(isinstance(res, sf.SSEResult), f"stream {i}: {res!r}")
        check(res.status == 200 and not res.problems, f"stream {i}: status {res.status}, "
              f"problems {res.problems}")
        text = "".join(c["choices"][0].get("text", "") for c in res.chunks() if c.get("choices"))
        check_eq(text, want[i], f"stream {i} text while bad requests came in")


def test_client_disconnect():
    before = S.metrics()
    ab0 = metric_sum(before, "flexq_requests_aborted_total", reason="client_disconnect") or 0.0
    res = sf.stream_post(S, "/v1/completions", {
        "model": MODEL, "prompt": P_STORY, "max_tokens": 300, "temperature": 0, "stream": True,
        "ignore_eos": True}, max_events=2, timeout=60)
    check_eq(res.status, 200, "status of the stream the client leaves")
    # the connection is closed now; the abort shows in /metrics and the slot frees (bounded)
    deadline = time.monotonic() + 15
    ab, running = ab0, None
    while time.monotonic() < deadline:
        m = S.metrics()
        ab = metric_sum(m, "flexq_requests_aborted_total", reason="client_disconnect") or 0.0
        running = metric_sum(m, "vllm:num_requests_running")
        if ab >= ab0 + 1 and running == 0:
            break
        time.sleep(0.2)
    check(ab >= ab0 + 1, f"flexq_requests_aborted_total{{reason=\"client_disconnect\"}} "
          f"{ab0} -> {ab} within 15 s of the disconnect")
    if running != 0:
        m = S.metrics()
        gauges = {g: metric_sum(m, g) for g in ("vllm:num_requests_running",
                                                 "vllm:num_requests_waiting",
                                                 "vllm:kv_cache_usage_perc", "flexq_kv_blocks_used",
                                                 "flexq_batch_size")}
        raise TestFailure(f"15 s after the disconnect (aborted counter {ab0} -> {ab}) the gauges "
                          f"still show the aborted request: {gauges}")
    text = client().completions.create(model=MODEL, prompt=P_FRANCE, max_tokens=8, temperature=0,
                                       extra_body={"ignore_eos": True}).choices[0].text
    check_eq(text, greedy(P_FRANCE, 8), "the next request after a disconnect")


def test_metrics_after_traffic():
    m = S.metrics()
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_count",
                 "vllm:e2e_request_latency_seconds_count", "vllm:request_success_total"):
        v = metric_sum(m, name)
        check(v is not None, f"/metrics lacks {name}")
    check(metric_sum(m, "vllm:generation_tokens_total") > 0, "no generation tokens counted")
    rej = metric_sum(m, "flexq_requests_rejected_total")
    check(rej is not None and rej > 0, f"flexq_requests_rejected_total {rej} after 400s")


# ---------------------------------------------------------------- daemons with other flags


def test_body_too_large():
    with sf.Server(EXE, MODEL_FILE, ["--max-body-bytes", "1KiB"], name="serve-body") as s2:
        big = {"model": s2.model_id(), "prompt": "x" * 4096, "max_tokens": 1}
        st, h, data = s2.request("POST", "/v1/completions", big,
                                 {"Content-Type": "application/json"})
        expect_error(st, h, sf.parse_json(data), 413, what="4 KiB body with --max-body-bytes 1KiB")
        small = {"model": s2.model_id(), "prompt": "Hello", "max_tokens": 1}
        st, _, data = s2.request("POST", "/v1/completions", small)
        check_eq(st, 200, f"a small body after a 413 ({data[:200]!r})")


def test_api_key():
    key = "itest-secret-key"
    with sf.Server(EXE, MODEL_FILE, ["--api-key", key], name="serve-auth") as s2:
        for path in ("/health", "/ready", "/metrics"):
            st, _, _ = s2.request("GET", path)
            check_eq(st, 200, f"GET {path} without a key")
        body = {"prompt": "Hello", "max_tokens": 1}
        for hdrs, what in (({}, "no Authorization"),
                           ({"Authorization": "Bearer wrong"}, "wrong key"),
                           ({"Authorization": key}, "key without Bearer")):
            hdrs = dict(hdrs, **{"Content-Type": "application/json"})
            st, h, data = s2.request("POST", "/v1/completions", body, hdrs)
            expect_error(st, h, sf.parse_json(data), 401, what=f"/v1/completions with {what}")
            st, h, data = s2.request("GET", "/v1/models", None, hdrs)
            expect_error(st, h, sf.parse_json(data), 401, what=f"/v1/models with {what}")
        try:
            client(s2, api_key="wrong").models.list()
            raise TestFailure("the openai client with a wrong key was let in")
        except openai.AuthenticationError:
            pass
        c = client(s2, api_key=key)
        mid = c.models.list().data[0].id
        r = c.completions.create(model=mid, prompt="Hello", max_tokens=2)
        check(r.usage.completion_tokens >= 1, f"completion with the right key: {r}")


def test_queue_full():
    args = ["--max-num-seqs", "1", "--max-queue-requests", "1"]
    with sf.Server(EXE, MODEL_FILE, args, name="serve-queue") as s2:
        mid = s2.model_id()
        m0 = s2.metrics()
        n = 6
        out = [None] * n

        def worker(i):
            try:
                st, h, data = s2.request("POST", "/v1/completions", {
                    "model": mid, "prompt": f"Story number {i}:", "max_tokens": 24,
                    "temperature": 0, "ignore_eos": True}, timeout=120)
                out[i] = (st, h, sf.parse_json(data))
            except Exception as e:  # noqa: BLE001
                out[i] = e

        ths = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(timeout=150)
        statuses = [o[0] if isinstance(o, tuple) else repr(o) for o in out]
        check(all(s in (200, 429) for s in statuses), f"statuses {statuses}")
        n200, n429 = statuses.count(200), statuses.count(429)
        check(n200 >= 1 and n429 >= 1, f"6 requests on 1 slot + 1 queue place: {statuses}")
        for o in out:
            if o[0] == 429:
                expect_error(o[0], o[1], o[2], 429, what="queue full")
                check_retry_after(o[1], "429 queue full")
            else:
                check_eq(o[2]["usage"]["completion_tokens"], 24, "an accepted request's tokens")
        m1 = s2.metrics()
        r0 = metric_sum(m0, "flexq_requests_rejected_total", reason="queue_full") or 0
        r1 = metric_sum(m1, "flexq_requests_rejected_total", reason="queue_full") or 0
        check_eq(r1 - r0, n429, "flexq_requests_rejected_total{reason=\"queue_full\"} increase")
        st, _, _ = s2.request("POST", "/v1/completions", {"model": mid, "prompt": "Hi",
                                                          "max_tokens": 2})
        check_eq(st, 200, "a request once the queue emptied")
        print(f"  statuses {statuses}")


def start_stream_after_first_chunk(s2, max_tokens):
    """Starts a greedy streamed completion on a thread; returns (thread, out) once its first chunk
    arrived. out[0] gets the stream's result or the exception it raised."""
    mid = s2.model_id()
    got_first = threading.Event()
    out = [None]

    def worker():
        try:
            out[0] = sf.stream_post(s2, "/v1/completions", {
                "model": mid, "prompt": P_STORY, "max_tokens": max_tokens, "temperature": 0,
                "stream": True, "ignore_eos": True}, on_event=lambda i, e: got_first.set(),
                timeout=120)
        except Exception as e:  # noqa: BLE001
            out[0] = e
        got_first.set()

    t = threading.Thread(target=worker)
    t.start()
    check(got_first.wait(60), "no first chunk within 60 s")
    return t, out


def test_drain():
    with sf.Server(EXE, MODEL_FILE, ["--drain-timeout-s", "60"], name="serve-drain") as s2:
        mid = s2.model_id()
        t, out = start_stream_after_first_chunk(s2, 40)
        s2.terminate()
        time.sleep(0.3)
        seen = {}
        try:
            st, h, data = s2.request("GET", "/ready", timeout=10)
            seen["ready"] = (st, h, data)
            st, h, data = s2.request("POST", "/v1/completions", {
                "model": mid, "prompt": "Hi", "max_tokens": 2}, timeout=10)
            seen["new"] = (st, h, data)
            st, h, data = s2.request("GET", "/health", timeout=10)
            seen["health"] = (st, h, data)
        except OSError as e:
            seen["error"] = e
        t.join(timeout=120)
        rc = s2.wait(60)
        # every finding, so that one report shows the whole drain
        fails = []

        def want(cond, msg):
            if not cond:
                fails.append(msg)

        want(rc is not None, "still running 60 s after SIGTERM and the end of its last request")
        want(rc in (None, 0), f"exit status {rc} after the drain")
        if "error" in seen:
            fails.append(f"a connection during the drain failed: {seen['error']!r} (answered "
                         f"before that: {sorted(k for k in seen if k != 'error')}); the "
                         "listening socket must stay open to answer 503 while draining")
        if "ready" in seen:
            st, h, _ = seen["ready"]
            want(st == 503, f"GET /ready while draining: {st}, want 503")
            want(re.fullmatch(r"\d+", (h.get("retry-after") or "").strip()) is not None,
                 f"GET /ready while draining: Retry-After {h.get('retry-after')!r}")
        if "new" in seen:
            st, h, data = seen["new"]
            try:
                expect_error(st, h, sf.parse_json(data), 503,
                             what="a new completion while draining")
                check_retry_after(h, "a new completion while draining")
            except TestFailure as e:
                fails.append(str(e))
        if "health" in seen:
            want(seen["health"][0] == 200, f"GET /health while draining: {seen['health'][0]}")
        res = out[0]
        if not isinstance(res, sf.SSEResult):
            fails.append(f"the stream in flight: {res!r}")
        elif res.problems:
            fails.append(f"the stream in flight during the drain: {res.problems}")
        else:
            cc = [c for c in res.chunks() if c.get("choices")]
            fr = cc[-1]["choices"][0].get("finish_reason") if cc else None
            want(fr == "length", f"the in-flight stream's finish_reason {fr!r}, want length")
            want(token_chunk_count(cc) == 40,
                 f"the in-flight stream got {token_chunk_count(cc)} tokens, want 40")
        try:
            s2.stop()  # exit status 0 and a clean log
        except TestFailure as e:
            fails.append(str(e))
        check(not fails, "drain:\n    " + "\n    ".join(fails))


def test_drain_timeout_aborts():
    with sf.Server(EXE, MODEL_FILE, ["--drain-timeout-s", "1"], name="serve-drain1") as s2:
        t, out = start_stream_after_first_chunk(s2, 400)
        t0 = time.monotonic()
        s2.terminate()
        rc = s2.wait(20)
        dt = time.monotonic() - t0
        t.join(timeout=20)
        check(rc is not None, "still running 20 s after SIGTERM with --drain-timeout-s 1")
        check(not t.is_alive(), "the client's stream did not end after the daemon exited")
        check_eq(rc, 0, f"exit status after a drain timeout ({dt:.1f} s)")
        res = out[0]
        if isinstance(res, sf.SSEResult):
            last = res.events[-2:] if res.events else []
            print(f"  the aborted stream: {len(res.events)} events, last "
                  f"{[e[:160] for e in last]}, problems {res.problems[:3]}")
        else:
            print(f"  the aborted stream: {res!r}")
        s2.stop()


# ---------------------------------------------------------------- main


TESTS = [(n, f) for n, f in list(globals().items()) if n.startswith("test_") and callable(f)]


def setup():
    global S, MODEL
    S = sf.Server(EXE, MODEL_FILE, ["--max-model-len", str(MAX_MODEL_LEN)], name="serve-main")
    S.start()
    MODEL = S.model_id()


def teardown():
    S.stop()


if __name__ == "__main__":
    sf.run_suite(TESTS, setup, teardown)
