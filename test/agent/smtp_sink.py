#!/usr/bin/env python3
"""SMTP server for the agent's tests and benchmark (aiosmtpd, Debian's python3-aiosmtpd).

  smtp_sink.py PORT DIR [--tls CERT KEY] [--auth USER:PASSWORD] [--delay SECONDS] [--count-only]

Listens on 127.0.0.1:PORT. Every message is written to DIR/NNNNNN.eml (atomically) and a line
"<n> <client port>" appended to DIR/peers (distinct client ports = SMTP connections used);
--count-only writes nothing but the count, to DIR/count, on exit, and reads each message's data in
blocks up to the end marker instead of line by line (what costs aiosmtpd most), so that in a
benchmark the server takes less of the machine from the agent it measures. --tls offers STARTTLS and requires
it before MAIL; --auth requires AUTH (PLAIN/LOGIN) with that user and password; --delay waits
before accepting each message. Stops on SIGTERM / SIGINT.
"""
import argparse
import asyncio
import os
import signal
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult


class CountingSMTP(SMTP):
    """aiosmtpd's server with a DATA that counts the message without keeping it."""

    async def smtp_DATA(self, arg):
        if await self.check_helo_needed() or await self.check_auth_needed('DATA'):
            return
        if not self.envelope.rcpt_tos:
            return await self.push('503 Error: need RCPT command')
        if arg:
            return await self.push('501 Syntax: DATA')
        await self.push('354 End data with <CR><LF>.<CR><LF>')
        tail = b'\r\n'  # the data starts at the beginning of a line
        while True:
            chunk = await self._reader.read(65536)
            if not chunk:  # connection lost
                return
            buf = tail + chunk
            if buf.find(b'\r\n.\r\n') >= 0:  # (no PIPELINING is offered: nothing follows it)
                break
            tail = buf[-4:]
        status = await self._call_handler_hook('DATA')
        self._set_post_data_state()
        await self.push('250 OK' if status is MISSING else status)


class CountingController(Controller):
    def factory(self):
        return CountingSMTP(self.handler, **self.SMTP_kwargs)


class Sink:
    def __init__(self, directory, delay, count_only):
        self.dir, self.delay, self.count_only = directory, delay, count_only
        self.n = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.n += 1
            n = self.n
        if not self.count_only:
            path = os.path.join(self.dir, '%06d.eml' % n)
            with open(path + '.tmp', 'wb') as f:
                f.write(envelope.original_content or envelope.content)
            os.rename(path + '.tmp', path)
            with open(os.path.join(self.dir, 'peers'), 'a') as f:
                f.write('%d %s\n' % (n, session.peer[1]))
        return '250 OK queued'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('port', type=int)
    ap.add_argument('dir')
    ap.add_argument('--tls', nargs=2)
    ap.add_argument('--auth')
    ap.add_argument('--delay', type=float, default=0)
    ap.add_argument('--count-only', action='store_true')
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    sink = Sink(a.dir, a.delay, a.count_only)
    kw = {}
    if a.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.tls[0], a.tls[1])
        kw.update(tls_context=ctx, require_starttls=True)
    if a.auth:
        user, password = a.auth.split(':', 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (auth_data.login.decode() == user and auth_data.password.decode() == password)
            return AuthResult(success=ok)
        kw.update(authenticator=authenticator, auth_required=True, auth_require_tls=bool(a.tls))
    controller = (CountingController if a.count_only else Controller)(sink, hostname='127.0.0.1', port=a.port, ready_timeout=10, **kw)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with open(os.path.join(a.dir, 'ready'), 'w') as f:
        f.write('ready\n')
    stop.wait()
    controller.stop()
    with open(os.path.join(a.dir, 'count'), 'w') as f:
        f.write('%d\n' % sink.n)


if __name__ == '__main__':
    main()
