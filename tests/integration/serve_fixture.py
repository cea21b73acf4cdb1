#!/usr/bin/env python3
"""serve_fixture.py — starts and stops flexq-serve on loopback for the integration tests, plus the
small test harness and HTTP/SSE helpers they share.

The daemon runs with the default model ($FLEXQ_MODEL; exit 77 = skipped when it is missing) on
127.0.0.1 and a free port (bind port 0, close, hand the number to the daemon; a collision is
retried with another port). start() waits (bounded) until /health and /ready answer 200; stop()
sends SIGTERM, waits (bounded) and checks the exit status is 0 and the log is clean (no
sanitizer report, no error-level line unless allowed). The daemon's stderr/stdout go to a log file
whose new lines are printed with any failing test.

Every loop here is bounded in count and time; nothing listens or connects beyond 127.0.0.1.

Harness: run_suite(tests) runs test functions in order (optionally filtered by `-k SUBSTRING`
arguments), prints PASS/FAIL/SKIP per test with the server log lines written during a failing
test, and ends with "N passed, N failed, N skipped"; exit 0 = all passed, 1 = a failure, 77 = all
skipped.
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

SKIP = 77
HOST = "127.0.0.1"

# ---- the executable and the model ----


def serve_exe(argv=None):
    """The flexq-serve path: argv[1] (meson passes it), else $FLEXQ_SERVE. Exits 77 when absent."""
    argv = sys.argv if argv is None else argv
    # positional arguments, without the "-k NAME" filters of the harness
    cleaned, skip_next = [], False
    for a in argv[1:]:
        if skip_next:
            skip_next = False
            continue
        if a == "-k":
            skip_next = True
            continue
        cleaned.append(a)
    args = cleaned
    exe = args[0] if args else os.environ.get("FLEXQ_SERVE", "")
    if not exe or not os.path.isfile(exe) or not os.access(exe, os.X_OK):
        print(f"SKIP: flexq-serve executable not found ({exe or 'no argument, FLEXQ_SERVE unset'})")
        sys.exit(SKIP)
    return os.path.abspath(exe)


def model_path():
    """$FLEXQ_MODEL, the default model; exits 77 when it is unset or missing."""
    m = os.environ.get("FLEXQ_MODEL", "")
    if not m or not os.path.exists(m):
        print(f"SKIP: default model not found (FLEXQ_MODEL={m!r}); run scripts/fetch-model.sh")
        sys.exit(SKIP)
    return m


def src_dir():
    return os.environ.get("FLEXQ_SRCDIR") or os.path.abspath(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---- failures ----


class TestFailure(AssertionError):
    pass


class TestSkip(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def check_eq(got, want, what):
    if got != want:
        raise TestFailure(f"{what}: got {got!r}, want {want!r}")


# ---- the daemon ----

_SERVERS = []  # every Server created, for the harness's log excerpts


class ServerError(Exception):
    pass


class Server:
    """One flexq-serve process on 127.0.0.1:<free port> with the default model and extra flags."""

    START_ATTEMPTS = 5

    def __init__(self, exe, model, extra_args=(), env=None, ready_timeout=120.0,
                 allow_error_log=False, name="flexq-serve"):
        self.exe = exe
        self.model = model
        self.extra_args = list(extra_args)
        # hermetic: no FLEXQ_* knob (FLEXQ_API_KEY, FLEXQ_CONFIG, ...) from the caller's
        # environment reaches the daemon; everything it needs is on its command line
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXQ_")}
        if env:
            self.env.update(env)
        self.ready_timeout = ready_timeout
        self.allow_error_log = allow_error_log
        self.name = name
        self.proc = None
        self.port = None
        self.returncode = None
        self.log_path = None
        self._log_file = None
        _SERVERS.append(self)

    # -- lifecycle --

    def cmdline(self, port):
        return [self.exe, "--model", self.model, "--host", HOST, "--port", str(port)] + \
            self.extra_args

    def start(self):
        last = ""
        for attempt in range(self.START_ATTEMPTS):
            port = free_port()
            fd, self.log_path = tempfile.mkstemp(prefix="flexq-serve-", suffix=".log")
            os.close(fd)
            self._log_file = open(self.log_path, "wb")
            self.port = port
            self.proc = subprocess.Popen(self.cmdline(port), stdin=subprocess.DEVNULL,
                                         stdout=self._log_file, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)
            ok, why = self._wait_ready()
            if ok:
                return self
            log = self.log_text()
            last = f"{why}\n--- log ---\n{tail(log, 40)}"
            if self.proc.poll() is None:
                self._kill()
            if re.search(r"in use|EADDRINUSE|bind", log, re.IGNORECASE) and \
                    attempt + 1 < self.START_ATTEMPTS:
                # somebody took the port between our close and the daemon's bind: another port
                self._close_log()
                os.unlink(self.log_path)
                continue
            break
        cmd = " ".join(self.cmdline(self.port))
        raise ServerError(f"{self.name} did not start ({cmd}): {last}")

    def _wait_ready(self):
        deadline = time.monotonic() + self.ready_timeout
        health_ok = False
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                return False, f"exited with status {rc} before answering /health"
            try:
                if not health_ok:
                    st, _, _ = self.request("GET", "/health", timeout=2)
                    health_ok = st == 200
                if health_ok:
                    st, _, _ = self.request("GET", "/ready", timeout=2)
                    if st == 200:
                        return True, ""
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        return False, (f"/health {'answered' if health_ok else 'did not answer'} 200, /ready not "
                       f"200 within {self.ready_timeout:.0f} s")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self):
        """Sends SIGTERM (the drain starts); does not wait."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout):
        """Waits up to timeout seconds for the exit; returns the status or None."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def _kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, timeout=60.0, check_clean=True):
        """SIGTERM, bounded wait, exit status 0 and a clean log; raises TestFailure otherwise."""
        if self.proc is None:
            return
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self._kill()
            self._close_log()
            raise TestFailure(f"{self.name} still running {timeout:.0f} s after SIGTERM (killed)"
                              f"\n--- log tail ---\n{tail(self.log_text(), 40)}")
        self._close_log()
        if check_clean:
            problems = self.log_problems()
            if rc != 0 or problems:
                raise TestFailure(
                    f"{self.name} did not stop cleanly: exit status {rc}"
                    + ("; log problems:\n  " + "\n  ".join(problems[:20]) if problems else "")
                    + f"\n--- log tail ---\n{tail(self.log_text(), 40)}")

    def kill_quietly(self):
        if self.proc is not None and self.running():
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(20) is None:
                self._kill()
        self._close_log()

    def _close_log(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        else:
            self.kill_quietly()
        return False

    # -- the log --

    def log_text(self):
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path) if self.log_path else 0
        except OSError:
            return 0

    def log_since(self, offset):
        return self.log_text().encode()[offset:].decode("utf-8", errors="replace")

    def log_problems(self):
        """Sanitizer reports, crashes and (unless allowed) error-level log lines."""
        out = []
        for line in self.log_text().splitlines():
            if re.search(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
                         r"runtime error:|double free or corruption", line):
                out.append(line)
            elif not self.allow_error_log and re.match(r"^\S+\s+error\b", line):
                out.append(line)
        return out

    # -- HTTP --

    @property
    def base_url(self):
        return f"http://{HOST}:{self.port}"

    def conn(self, timeout=60):
        return http.client.HTTPConnection(HOST, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """One request on a fresh connection: (status, {lowercase header: value}, body bytes).
        body: bytes, str, or any other value (sent as JSON)."""
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def post_json(self, path, obj, headers=None, timeout=120):
        """(status, headers, parsed JSON or None)."""
        st, h, data = self.request("POST", path, obj, headers, timeout)
        return st, h, parse_json(data)

    def get_json(self, path, headers=None, timeout=30):
        st, h, data = self.request("GET", path, None, headers, timeout)
        return st, h, parse_json(data)

    def metrics(self):
        st, _, data = self.request("GET", "/metrics", timeout=30)
        check_eq(st, 200, "GET /metrics status")
        return data.decode()

    def model_id(self):
        st, _, j = self.get_json("/v1/models")
        check_eq(st, 200, "GET /v1/models status")
        return j["data"][0]["id"]

    def tokenize(self, prompt=None, messages=None, **kw):
        body = dict(kw)
        if messages is not None:
            body["messages"] = messages
        else:
            body["prompt"] = prompt
        st, _, j = self.post_json("/tokenize", body)
        check_eq(st, 200, f"POST /tokenize status (body {j})")
        return j["tokens"]


def parse_json(data):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def tail(text, n):
    lines = text.splitlines()
    return "\n".join(lines[-n:])


# ---- SSE ----


class SSEResult:
    """A whole SSE response read raw: status, headers, the data payloads in order, the raw bytes,
    and framing problems found (anything that is not `data: ...\\n\\n`)."""

    def __init__(self):
        self.status = None
        self.headers = {}
        self.events = []  # data payload strings, "[DONE]" included
        self.raw = b""
        self.problems = []
        self.body = b""  # the body when the response was not a stream

    def chunks(self):
        """The parsed JSON chunks before [DONE]."""
        return [json.loads(e) for e in self.events if e != "[DONE]"]


def parse_sse(raw, res):
    """Splits raw into events, checking the framing; fills res.events and res.problems."""
    if not raw.endswith(b"\n\n"):
        res.problems.append(f"stream does not end with a blank line: ...{raw[-60:]!r}")
    parts = raw.split(b"\n\n")
    if parts and parts[-1] == b"":
        parts = parts[:-1]
    for p in parts:
        if not p.startswith(b"data: "):
            res.problems.append(f"event not of the form 'data: ...': {p[:120]!r}")
            continue
        if b"\n" in p:
            res.problems.append(f"event with more than one line: {p[:120]!r}")
        res.events.append(p[len(b"data: "):].decode("utf-8", errors="replace"))
    if not res.events or res.events[-1] != "[DONE]":
        res.problems.append("the last event is not [DONE]: "
                            f"{res.events[-1][:120] if res.events else '(no events)'}")
    if res.events.count("[DONE]") != 1:
        res.problems.append(f"[DONE] appears {res.events.count('[DONE]')} times")
    for e in res.events[:-1]:
        if e == "[DONE]":
            continue
        try:
            json.loads(e)
        except ValueError:
            res.problems.append(f"event payload is not JSON: {e[:120]!r}")


def stream_post(server, path, body, headers=None, timeout=120, on_event=None, max_events=None):
    """POSTs a streaming request and reads the SSE response raw. on_event(i, payload) runs per
    event; reading stops (connection closed) after max_events events when given."""
    res = SSEResult()
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    c = server.conn(timeout)
    try:
        c.request("POST", path, body=json.dumps(body).encode(), headers=hdrs)
        r = c.getresponse()
        res.status = r.status
        res.headers = {k.lower(): v for k, v in r.getheaders()}
        if r.status != 200 or "text/event-stream" not in res.headers.get("content-type", ""):
            res.body = r.read()
            return res
        buf = b""
        n = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                piece = r.read1(65536)
            except (http.client.IncompleteRead, ConnectionError) as e:
                res.problems.append(f"the connection ended inside the chunked body "
                                    f"({type(e).__name__}) after {n} events")
                break
            if not piece:
                break
            buf += piece
            res.raw += piece
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                n += 1
                if on_event is not None:
                    on_event(n - 1, ev[len(b"data: "):].decode("utf-8", errors="replace"))
                if max_events is not None and n >= max_events:
                    return res
        else:
            res.problems.append(f"stream not finished within {timeout} s")
        parse_sse(res.raw, res)
        return res
    finally:
        c.close()


# ---- the harness ----


def run_suite(tests, setup=None, teardown=None):
    """Runs tests [(name, fn)] in order; -k SUBSTR arguments select by name. setup() runs first
    (a ServerError there fails every test), teardown() last (its failure counts as a failure).
    Prints the closing "N passed, N failed, N skipped" line and exits."""
    sel = [sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "-k"]
    if sel:
        tests = [(n, f) for n, f in tests if any(s in n for s in sel)]
    passed = failed = skipped = 0
    t_all = time.monotonic()
    try:
        if setup is not None:
            setup()
    except (ServerError, TestFailure) as e:
        print(f"FAIL setup: {e}")
        print(f"{0} passed, {len(tests)} failed, 0 skipped")
        sys.stdout.flush()
        _cleanup()
        sys.exit(1)
    for name, fn in tests:
        offsets = {id(s): s.log_size() for s in _SERVERS}
        t0 = time.monotonic()
        try:
            fn()
            passed += 1
            print(f"PASS {name} ({time.monotonic() - t0:.1f} s)")
        except TestSkip as e:
            skipped += 1
            print(f"SKIP {name}: {e}")
        except Exception as e:  # noqa: BLE001 — every failure is reported the same way
            failed += 1
            kind = "" if isinstance(e, (TestFailure, AssertionError)) else f"{type(e).__name__}: "
            print(f"FAIL {name} ({time.monotonic() - t0:.1f} s): {kind}{e}")
            if not isinstance(e, (TestFailure, AssertionError, ServerError)):
                traceback.print_exc(file=sys.stdout)
            for s in _SERVERS:
                new = s.log_since(offsets.get(id(s), 0))
                if new.strip():
                    print(f"  --- {s.name} log during {name} (last 30 lines) ---")
                    for line in tail(new, 30).splitlines():
                        print(f"  | {line}")
        sys.stdout.flush()
    if teardown is not None:
        try:
            teardown()
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL teardown: {e}")
    _cleanup()
    print(f"total {time.monotonic() - t_all:.1f} s")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    sys.stdout.flush()
    if failed:
        sys.exit(1)
    if passed == 0 and skipped:
        sys.exit(SKIP)
    sys.exit(0)


def _cleanup():
    for s in _SERVERS:
        s.kill_quietly()
        if s.log_path and os.environ.get("FLEXQ_KEEP_LOGS") is None:
            try:
                os.unlink(s.log_path)
            except OSError:
                pass
