#!/usr/bin/env python3
"""Opens N real TCP connections to a VIP, one HTTP/1.0 request on each, and
prints a JSON summary: how many completed, and which backend served each
(from the response body). Bounded in count and in time."""
import argparse
import json
import socket
import sys
import time


def one(host, port, timeout):
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) > 1 << 20:
                break
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200"):
        raise RuntimeError("bad status: %r" % head[:40])
    text = body.decode(errors="replace").strip()
    if not text.startswith("served-by "):
        raise RuntimeError("bad body: %r" % text[:40])
    return text.split(" ", 1)[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--deadline", type=float, default=60.0, help="give up after this many seconds")
    args = ap.parse_args()
    per = {}
    errors = []
    ok = 0
    start = time.time()
    for i in range(args.count):
        if time.time() - start > args.deadline:
            errors.append("deadline reached after %d connections" % i)
            break
        try:
            b = one(args.host, args.port, args.timeout)
            per[b] = per.get(b, 0) + 1
            ok += 1
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errors.append("connection %d: %s" % (i, e))
    json.dump({"attempted": args.count, "ok": ok, "failed": args.count - ok,
               "per_backend": per, "errors": errors[:10],
               "seconds": round(time.time() - start, 2)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
