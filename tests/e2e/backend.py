#!/usr/bin/env python3
"""A real HTTP backend for the tests and the demo.

Serves GET / with a body naming this backend, logs one line per request it
served to --log (the demo counts those lines), and serves GET /big?bytes=N
for bulk downloads. Runs until killed.
"""
import argparse
import http.server
import socketserver
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    log = open(args.log, "a", buffering=1)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            if self.path.startswith("/big"):
                n = 1 << 20
                try:
                    n = int(self.path.split("bytes=", 1)[1])
                except (IndexError, ValueError):
                    pass
                body = b"x" * n
            else:
                body = ("served-by %s\n" % args.name).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            log.write("%s %s %s\n" % (args.name, self.client_address[0], self.path))

        def log_message(self, fmt, *a):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128

    srv = Server((args.bind, args.port), Handler)
    print("backend %s listening on %s:%d" % (args.name, args.bind, args.port), file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
