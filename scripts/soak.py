#!/usr/bin/env python3
"""A long churn against a running `skein serve`, watching every rank's memory for leaks.

    python3 scripts/soak.py --tcp 127.0.0.1:7700 --http 127.0.0.1:7701 [--minutes 10] [--clients 8]

Each client loops over what holds memory on a server, chosen at random (seeded): streamed and plain
requests over TCP, streamed chat over HTTP (server-sent events); cancels, and disconnects mid-stream
over both; urgent requests that preempt others; n samples with logprobs; JSON mode; chat turns on a
pool of sessions, with forks, deletes and state downloads and uploads; malformed requests, and
requests over the size limit sent whole before reading (the refusal must arrive, not a reset). Every
request must end with a final event (or the error it asked for);
anything else counts as lost. Every `--every` seconds it prints the memory and file figures of /metrics
(process_*, skein_stage_resident_memory_bytes, sessions, prefix cache, parked states), and at the end
each figure's growth after the warm-up, per 1,000 requests. Exit status 1 if a request was lost or the
server went away. Standard library only.
"""
import argparse
import http.client
import json
import random
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

PROMPTS = ["The man said", "It was a dark and stormy night", "Once upon a time", "The results of the study",
           "She opened the door and", "A long time ago in a", "\nIn the beginning", "The quick brown fox"]
WATCHED = ["process_resident_memory_bytes", "skein_stage_resident_memory_bytes", "process_open_fds", "skein_sessions",
           "skein_session_host_bytes", "skein_prefix_cache_bytes", "skein_parked_bytes", "skein_requests_running"]


class Lost(Exception):
    """A request that ended without its final event, or an answer of the wrong shape."""


def host_port(text):
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.done = {}  # action -> count
        self.lost = []  # first few problems

    def ok(self, action):
        with self.lock:
            self.done[action] = self.done.get(action, 0) + 1

    def problem(self, what):
        with self.lock:
            self.lost.append(what)

    def total(self):
        with self.lock:
            return sum(self.done.values())


def tcp_lines(sock):
    """The server's lines, one JSON object each."""
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield json.loads(line)


def tcp_request(tcp, req, then=None):
    """Sends one request; `then` may act on the first delta ('cancel' or 'disconnect'). Returns the final event."""
    with socket.create_connection(tcp, timeout=120) as s:
        s.sendall((json.dumps(req) + "\n").encode())
        finals = 0
        for ev in tcp_lines(s):
            if ev.get("event") == "error":
                return ev
            if ev.get("event") == "delta" and then == "disconnect":
                return None  # the server must cancel it and free its slot
            if ev.get("event") == "delta" and then == "cancel":
                s.sendall((json.dumps({"cancel": req["id"]}) + "\n").encode())
                then = None
            if ev.get("event") == "done":
                finals += 1
                if finals == req.get("n", 1):
                    return ev
        raise Lost("connection closed before the final event of " + req["id"])


OVERSIZED = 8 << 20  # bytes: past any request limit a soak's server has (1 MiB by default), within what it drains


def tcp_oversized(tcp):
    """An over-long line sent whole before reading: the server's error event, not a reset."""
    with socket.create_connection(tcp, timeout=120) as s:
        s.sendall(b'{"prompt": "' + b"a" * OVERSIZED)
        s.shutdown(socket.SHUT_WR)
        for ev in tcp_lines(s):
            return ev
    raise Lost("oversized: the connection closed without an error event")


def call(base, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    r = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(r, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_stream(http_addr, body, disconnect):
    """A streamed chat completion: every server-sent event to [DONE], or away after the first one."""
    conn = http.client.HTTPConnection(*http_addr, timeout=120)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise Lost("stream: %d %s" % (resp.status, resp.read()[:200]))
        while True:
            line = resp.readline()
            if not line:
                raise Lost("stream: the events ended without [DONE]")
            if line.startswith(b"data: "):
                if disconnect or line.strip() == b"data: [DONE]":
                    return  # closing the connection must cancel the request and free its slot
                json.loads(line[6:])
    finally:
        conn.close()


def client(index, args, tally, until):
    rng = random.Random(args.seed * 1000 + index)
    tcp, base = host_port(args.tcp), "http://%s:%d" % host_port(args.http)
    n = 0
    while time.time() < until:
        n += 1
        rid = "%d-%d" % (index, n)
        session = "soak-%d" % rng.randrange(args.sessions)
        action = rng.choice(["stream", "plain", "cancel", "disconnect", "urgent", "samples", "json", "chat", "chat",
                             "sse", "sse_disconnect", "fork", "delete", "move", "malformed", "oversized"])
        try:
            req = {"id": rid, "prompt": rng.choice(PROMPTS), "max_tokens": rng.randrange(1, args.max_tokens + 1),
                   "temperature": rng.choice([0, 0.8, 1.0]), "seed": rng.randrange(1 << 30)}
            if action in ("stream", "plain", "cancel", "disconnect", "urgent", "json"):
                req["stream"] = action != "plain"
                if action == "urgent":
                    req["priority"] = -1
                if action == "json":
                    req["response_format"] = {"type": "json_object"}
                ev = tcp_request(tcp, req, action if action in ("cancel", "disconnect") else None)
                if action != "disconnect" and (ev is None or ev.get("event") != "done"):
                    raise Lost("%s %s: %s" % (action, rid, ev))
            elif action == "samples":
                status, body = call(base, "POST", "/v1/completions", {"prompt": req["prompt"], "max_tokens": req["max_tokens"], "n": 3,
                                                                       "logprobs": 2, "temperature": 1.0, "seed": req["seed"]})
                if status != 200 or len(json.loads(body)["choices"]) != 3:
                    raise Lost("samples: %d %s" % (status, body[:200]))
            elif action == "chat":
                status, body = call(base, "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": req["prompt"]}],
                                                                            "max_tokens": req["max_tokens"], "session": session})
                if status not in (200, 409):  # 409: another client's turn of that session is running
                    raise Lost("chat: %d %s" % (status, body[:200]))
            elif action in ("sse", "sse_disconnect"):
                http_stream(host_port(args.http), {"messages": [{"role": "user", "content": req["prompt"]}], "max_tokens": req["max_tokens"],
                                                   "stream": True, "temperature": req["temperature"]}, action == "sse_disconnect")
            elif action == "fork":
                status, body = call(base, "POST", "/v1/sessions/%s/fork" % session, {"to": "soak-%d" % rng.randrange(args.sessions)})
                if status not in (200, 404, 409):
                    raise Lost("fork: %d %s" % (status, body[:200]))
            elif action == "delete":
                status, body = call(base, "DELETE", "/v1/sessions/" + session)
                if status not in (200, 404, 409):
                    raise Lost("delete: %d %s" % (status, body[:200]))
            elif action == "move":  # download a session's state and upload it under another name
                status, state = call(base, "GET", "/v1/sessions/%s/state" % session)
                if status == 200:
                    status, body = call(base, "PUT", "/v1/sessions/soak-%d/state" % rng.randrange(args.sessions), raw=state)
                    if status not in (200, 201, 409):
                        raise Lost("upload: %d %s" % (status, body[:200]))
                elif status not in (404, 409):
                    raise Lost("download: %d %s" % (status, state[:200]))
            elif action == "malformed":
                status, body = call(base, "POST", "/v1/completions", raw=rng.choice([b"{oops", b'{"prompt": 1}', b'{"prompt": "x", "bogus": 1}', b"[]"]))
                if status != 400:
                    raise Lost("malformed: %d %s" % (status, body[:200]))
            elif action == "oversized":
                if rng.random() < 0.5:
                    status, body = call(base, "POST", "/v1/completions", raw=b" " * OVERSIZED)  # urllib sends it all, then reads
                    if status != 413:
                        raise Lost("oversized: %d %s" % (status, body[:200]))
                else:
                    ev = tcp_oversized(tcp)
                    if ev.get("event") != "error" or "exceeds" not in ev.get("error", ""):
                        raise Lost("oversized: %s" % ev)
            tally.ok(action)
        except (Lost, OSError, ValueError, KeyError) as e:
            tally.problem("client %d: %s: %s" % (index, action, e))
            time.sleep(0.5)


def scrape(base):
    """The watched figures: name{labels} -> value (labelled series summed by name too)."""
    status, body = call(base, "GET", "/metrics")
    out = {}
    for line in body.decode().splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if m and m.group(1) in WATCHED:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def megabytes(name, v):
    return "%.1f MB" % (v / 1e6) if name.endswith("bytes") or "bytes{" in name else "%g" % v


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tcp", required=True, help="the server's TCP API, HOST:PORT")
    p.add_argument("--http", required=True, help="its HTTP API, HOST:PORT")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--sessions", type=int, default=24, help="size of the pool of session names the clients share")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--every", type=float, default=30, help="seconds between memory lines")
    p.add_argument("--warmup", type=float, default=60, help="seconds before the baseline is taken")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    base = "http://%s:%d" % host_port(args.http)
    tally, start = Tally(), time.time()
    until = start + args.minutes * 60
    threads = [threading.Thread(target=client, args=(i, args, tally, until), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    baseline = None
    try:
        while time.time() < until:
            time.sleep(min(args.every, max(0.1, until - time.time())))
            now, figures, done = time.time() - start, scrape(base), tally.total()
            if baseline is None and now >= args.warmup:
                baseline = (done, figures)
            print("soak: %5.0f s, %6d requests: %s" % (now, done, ", ".join("%s %s" % (k, megabytes(k, v)) for k, v in sorted(figures.items()))),
                  flush=True)
    except OSError as e:
        print("soak: the server stopped answering /metrics: %s" % e, file=sys.stderr)
        return 1
    for t in threads:
        t.join()
    figures, done = scrape(base), tally.total()
    print("soak: %d requests in %.0f s: %s" % (done, time.time() - start, json.dumps(tally.done, sort_keys=True)))
    if baseline and done > baseline[0]:
        per = 1000.0 / (done - baseline[0])
        for k in sorted(figures):
            if k in baseline[1]:
                print("soak: %s %s -> %s (%+.3g per 1,000 requests after the warm-up)" %
                      (k, megabytes(k, baseline[1][k]), megabytes(k, figures[k]), (figures[k] - baseline[1][k]) * per))
    if tally.lost:
        print("soak: %d lost or wrong; first: %s" % (len(tally.lost), "; ".join(tally.lost[:5])), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
