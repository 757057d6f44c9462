"""Test helpers: a threaded HTTP server on 127.0.0.1 whose routes the test writes, and
small checks shared by the download tests (tests/test_download.py, tests/test_bsd.py).

Nothing here touches the internet.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

FAST = {"retries": 1, "backoff": 0.0, "timeout": 5.0}


class Server:
    """Threaded HTTP server; ``routes[path] = bytes | int (status) | ("drop", bytes, n)``."""

    def __init__(self):
        self.routes: dict[str, object] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                route = server.routes.get(self.path, 404)
                if isinstance(route, tuple) and route[0] == "drop_once":
                    _, data, n = route
                    server.routes[self.path] = data  # next request succeeds
                    route = ("drop", data, n)
                if isinstance(route, int):
                    self.send_error(route)
                    return
                if isinstance(route, tuple) and route[0] == "trickle":  # a byte per delay
                    _, data, delay = route
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    try:
                        for byte in data:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(delay)
                    except OSError:  # the client gave up
                        pass
                    return
                if isinstance(route, tuple):  # announce everything, send n bytes, hang up
                    _, data, n = route
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(route)))
                self.end_headers()
                self.wfile.write(route)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def serve(self, prefix: str, files: dict[str, object]) -> str:
        for name, data in files.items():
            self.routes[f"{prefix}/{name}"] = data
        return f"{self.url}{prefix}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()



def closed_port_url(path: str = "/mnist/") -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}{path}"


def leftovers(folder) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []



def run_script(script, *args, cwd=None):
    """Run a script in a fresh interpreter, as a user or Snakemake would."""
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)

