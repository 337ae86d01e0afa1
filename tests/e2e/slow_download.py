#!/usr/bin/env python3
"""A slow HTTP/1.0 download through a VIP, for tests that change the
dispatcher's tables while a connection is open.

Connects, prints {"local_port": P} on a line of its own (flushed) as soon as
the connection is up, sends GET /big?bytes=N, then reads the response in
small chunks with short sleeps so that it lasts about --seconds, and finally
prints a JSON line with the body length and whether it matched. Bounded by
--deadline."""
import argparse
import json
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--bytes", type=int, default=20000000)
    ap.add_argument("--seconds", type=float, default=6.0, help="about how long the download should last")
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--deadline", type=float, default=60.0)
    args = ap.parse_args()
    start = time.time()
    s = socket.create_connection((args.host, args.port), timeout=5)
    # A small receive buffer so that the sender is really held back.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    print(json.dumps({"local_port": s.getsockname()[1]}), flush=True)
    s.sendall(b"GET /big?bytes=%d HTTP/1.0\r\nHost: vip\r\n\r\n" % args.bytes)
    s.settimeout(10)
    # Paced by bytes: after reading a fraction f of the body, wait until a
    # fraction f of --seconds has passed.
    t_body = time.time()
    data = bytearray()
    head = None
    body = 0
    error = None
    try:
        while time.time() - start < args.deadline:
            chunk = s.recv(args.chunk)
            if not chunk:
                break
            if head is None:
                data += chunk
                if b"\r\n\r\n" in data:
                    head, _, rest = bytes(data).partition(b"\r\n\r\n")
                    body = len(rest)
                    data = None
            else:
                body += len(chunk)
            ahead = t_body + args.seconds * body / max(1, args.bytes) - time.time()
            if ahead > 0:
                time.sleep(min(ahead, 0.5))
        else:
            error = "deadline reached"
    except OSError as e:
        error = str(e)
    finally:
        s.close()
    status = head.split(b"\r\n", 1)[0].decode(errors="replace") if head else None
    print(json.dumps({"status": status, "body_bytes": body, "expected": args.bytes,
                      "error": error, "seconds": round(time.time() - start, 2)}), flush=True)
    sys.exit(0 if error is None and body == args.bytes else 1)


if __name__ == "__main__":
    main()
