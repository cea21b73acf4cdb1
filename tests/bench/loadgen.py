#!/usr/bin/env python3
"""loadgen.py — the serving benchmark's load generator: streaming /v1/completions requests at a
fixed concurrency against flexq-serve (or any OpenAI-compatible server), with the metrics computed
the way `vllm bench serve` computes them.

Per request: random token-id prompts of --prompt tokens, max_tokens --output with ignore_eos,
--temperature (default 0: greedy) and --top-p (default 1), stream with usage. TTFT = first streamed token - send; ITL = the gaps between streamed tokens; TPOT =
(E2E - TTFT) / (output tokens - 1); E2E = last byte - send. Per level: request throughput =
completed / duration, output token throughput = completion tokens / duration (duration: first send
to last completion), and mean / median / p99 of TTFT, TPOT, ITL and E2E in milliseconds. Failed
requests are counted and left out of the latencies.

Only the Python standard library (asyncio streams, HTTP/1.1 with chunked decoding), so it runs on
the GPU machine as it is. One JSON object per concurrency level on stdout (and appended to --out):
{"concurrency", "requests", "completed", "failed", "duration_s", "req_s", "out_tok_s",
 "ttft_ms": {"mean", "median", "p99"}, "tpot_ms": {...}, "itl_ms": {...}, "e2e_ms": {...},
 "offline_tok_s"} — offline_tok_s from --offline (flexq-bench JSON lines: decode_tok_s of the
batch equal to the concurrency), else null.
Usage: loadgen.py --url http://127.0.0.1:8000 --model NAME [--concurrency 1,8,32,64]
                  [--requests N] [--prompt 128] [--output 256] [--token-max 20000] [--seed 1]
                  [--temperature 0] [--top-p 1]
                  [--out FILE.jsonl] [--offline BENCH.jsonl]
"""
import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import urllib.parse


def pct(xs, q):
    """The q-th percentile with linear interpolation (numpy's default), as vllm reports p99."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs):
    if not xs:
        return {"mean": None, "median": None, "p99": None}
    return {"mean": round(statistics.fmean(xs), 3), "median": round(statistics.median(xs), 3),
            "p99": round(pct(xs, 99), 3)}


async def read_headers(reader):
    status = await reader.readline()
    if not status:
        raise ConnectionError("connection closed before the status line")
    code = int(status.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return code, headers


async def body_chunks(reader, headers):
    """Yields the response body as it arrives (chunked, by length, or until close)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


async def one_request(url, body):
    """Sends one streaming request; returns (ok, ttft, itls, e2e, completion_tokens, error)."""
    u = urllib.parse.urlsplit(url)
    payload = json.dumps(body).encode()
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
    try:
        writer.write((f"POST /v1/completions HTTP/1.1\r\nHost: {u.netloc}\r\n"
                      f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                      f"Connection: close\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
                     + payload)
        await writer.drain()
        code, headers = await read_headers(reader)
        if code != 200:
            data = b"".join([c async for c in body_chunks(reader, headers)])
            return False, None, [], None, 0, f"HTTP {code}: {data[:200]!r}"
        ttft, last, itls, tokens, buf = None, None, [], 0, b""
        async for chunk in body_chunks(reader, headers):
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        continue
                    obj = json.loads(data)
                    if "error" in obj:
                        return False, None, [], None, 0, f"stream error: {obj['error']}"
                    if obj.get("usage"):
                        tokens = obj["usage"].get("completion_tokens", tokens)
                    if any(c.get("text") for c in obj.get("choices", [])):
                        now = time.perf_counter()
                        if ttft is None:
                            ttft = now - t0
                        else:
                            itls.append(now - last)
                        last = now
        e2e = time.perf_counter() - t0
        if ttft is None:
            return False, None, [], None, 0, "no token streamed"
        return True, ttft, itls, e2e, tokens, None
    finally:
        writer.close()


async def run_level(a, conc, rng):
    n = a.requests or max(16, 4 * conc)
    sem = asyncio.Semaphore(conc)
    results = []

    async def task(i):
        prompt = [rng.randrange(a.token_min, a.token_max) for _ in range(a.prompt)]
        body = {"model": a.model, "prompt": prompt, "max_tokens": a.output, "ignore_eos": True,
                "temperature": a.temperature, "top_p": a.top_p, "stream": True,
                "stream_options": {"include_usage": True}}
        async with sem:
            start = time.perf_counter()
            try:
                r = await one_request(a.url, body)
            except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError) as e:
                r = (False, None, [], None, 0, f"{type(e).__name__}: {e}")
            results.append((start, time.perf_counter(), r))

    t0 = time.perf_counter()
    await asyncio.gather(*(task(i) for i in range(n)))
    ok = [r for r in results if r[2][0]]
    errors = [r[2][5] for r in results if not r[2][0]]
    duration = (max(r[1] for r in results) - min(r[0] for r in results)) if results else 0.0
    out_tokens = sum(r[2][4] for r in ok)
    ttft = [1000 * r[2][1] for r in ok]
    itl = [1000 * x for r in ok for x in r[2][2]]
    e2e = [1000 * r[2][3] for r in ok]
    tpot = [1000 * (r[2][3] - r[2][1]) / (r[2][4] - 1) for r in ok if r[2][4] > 1]
    rec = {"concurrency": conc, "requests": n, "completed": len(ok), "failed": len(errors),
           "duration_s": round(duration, 3), "wall_s": round(time.perf_counter() - t0, 3),
           "req_s": round(len(ok) / duration, 4) if duration > 0 else 0.0,
           "out_tok_s": round(out_tokens / duration, 2) if duration > 0 else 0.0,
           "ttft_ms": summary(ttft), "tpot_ms": summary(tpot), "itl_ms": summary(itl),
           "e2e_ms": summary(e2e), "prompt": a.prompt, "output": a.output,
           "temperature": a.temperature, "top_p": a.top_p,
           "offline_tok_s": None}
    if errors:
        rec["first_error"] = errors[0]
    return rec


def offline_rates(path):
    rates = {}
    if path:
        for line in open(path):
            line = line.strip()
            if line:
                r = json.loads(line)
                if "decode_tok_s" in r:
                    rates[int(r["batch"])] = r["decode_tok_s"]
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--requests", type=int, default=0, help="per level (default max(16, 4C))")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--output", type=int, default=256)
    ap.add_argument("--token-min", type=int, default=1000)
    ap.add_argument("--token-max", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--out")
    ap.add_argument("--offline")
    a = ap.parse_args()
    if not 0 <= a.token_min < a.token_max or a.prompt < 1 or a.output < 1:
        print("loadgen: need 0 <= --token-min < --token-max, --prompt and --output >= 1",
              file=sys.stderr)
        return 2
    rates = offline_rates(a.offline)
    rng = random.Random(a.seed)
    failed = 0
    for c in [int(x) for x in a.concurrency.split(",") if x]:
        rec = asyncio.run(run_level(a, c, rng))
        rec["offline_tok_s"] = rates.get(c)
        failed += rec["failed"]
        line = json.dumps(rec)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
