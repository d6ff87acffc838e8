#!/usr/bin/env python3
"""HTTP receiver of the agent's sms / in_app webhooks, for the tests.

  webhook_sink.py PORT DIR [--fail-first N]

Listens on 127.0.0.1:PORT; each POST is written to DIR/NNNNNN.json as
{"path": ..., "headers": {...}, "body": <the posted JSON>} and answered 200 (or 503 for the first N
requests, to exercise retries). Stops on SIGTERM / SIGINT.
"""
import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('port', type=int)
    ap.add_argument('dir')
    ap.add_argument('--fail-first', type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    state = {'n': 0, 'failed': 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
            with lock:
                if state['failed'] < a.fail_first:
                    state['failed'] += 1
                    code = 503
                else:
                    state['n'] += 1
                    code = 200
                    n = state['n']
            if code == 200:
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                path = os.path.join(a.dir, '%06d.json' % n)
                with open(path + '.tmp', 'w') as f:
                    json.dump({'path': self.path, 'headers': dict(self.headers), 'body': doc}, f)
                os.rename(path + '.tmp', path)
            self.send_response(code)
            self.send_header('Content-Length', '0')
            self.end_headers()

    srv = ThreadingHTTPServer(('127.0.0.1', a.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=srv.shutdown).start())
    with open(os.path.join(a.dir, 'ready'), 'w') as f:
        f.write('ready\n')
    srv.serve_forever()
    sys.exit(0)


if __name__ == '__main__':
    main()
