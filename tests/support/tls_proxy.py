"""A TLS-terminating proxy of the tests' own in front of the dev server's plain gRPC port: what a
Temporal frontend with mTLS looks like to a client. It listens on 127.0.0.1 (a port chosen at run
time), shows a certificate of its server CA for "localhost" and "127.0.0.1", offers ALPN h2 (the
Rust core refuses a TLS endpoint that does not agree on it: `H2NotNegotiated`),
requires a client certificate of its client CA, and pipes bytes both ways once the handshake is done.

The TLS is driven by hand (an `ssl.SSLObject` over memory BIOs) rather than by asyncio's transport:
asyncio drops the alert of a failed handshake and aborts the connection, so a client would see a
bare reset where a real server (Go's crypto/tls in Temporal's frontend) tells it why. Here the alert
is sent, the connection is half-closed and drained, and the reason is kept in `refused`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

CHUNK = 64 * 1024
CAPTURE = 16 * 1024
HANDSHAKE_TIMEOUT = 10
DRAIN_TIMEOUT = 1  # after a refused handshake: read what the client still sends, so close is no reset


class TlsProxy:
    def __init__(
        self,
        upstream: str,
        server_ca: trustme.CA,
        client_ca: trustme.CA,
        names: tuple[str, ...] = ("localhost", "127.0.0.1"),
        tls_max: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
        alpn: tuple[str, ...] = ("h2",),  # what a frontend offers; the Rust core insists on h2
    ):
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ca.issue_cert(*names).configure_cert(self.context)
        client_ca.configure_trust(self.context)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.set_alpn_protocols(list(alpn))
        self.context.maximum_version = tls_max
        self.refused: list[str] = []  # why a handshake failed, as the proxy saw it
        self.dropped: list[str] = []  # why a piped connection ended otherwise than by an EOF
        self.accepted: list[str] = []  # the ALPN protocol of each connection piped to the upstream
        self.connections = 0  # TCP connections accepted, whatever became of them
        self.seen: list[bytearray] = []  # of each piped connection: the first CAPTURE bytes the client sent, decrypted
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task] = set()
        self._sockets: set[socket.socket] = set()

    @property
    def address(self) -> str:
        assert self._listener is not None, "not started"
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> TlsProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(32)
        listener.setblocking(False)
        self._listener = listener
        self._spawn(self._accept())
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sock in list(self._sockets):
            sock.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def __aenter__(self) -> TlsProxy:
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            self.connections += 1
            conn.setblocking(False)
            self._sockets.add(conn)
            self._spawn(self._serve(conn))

    async def _serve(self, conn: socket.socket) -> None:
        upstream = None
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            tls = _Tls(conn, self.context)
            try:
                await asyncio.wait_for(tls.handshake(), HANDSHAKE_TIMEOUT)
            except (TimeoutError, ssl.SSLError, OSError, EOFError) as exc:
                self.refused.append(f"{type(exc).__name__}: {exc} [{loop.time() - started:.2f}s]")
                await tls.refuse()
                return
            self.accepted.append(tls.obj.selected_alpn_protocol() or "")
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            self._sockets.add(upstream)
            await loop.sock_connect(upstream, self.upstream)
            self.seen.append(bytearray())
            await _both(tls.to(upstream, self.seen[-1]), tls.from_(upstream))
        except (OSError, ssl.SSLError, EOFError) as exc:
            self.dropped.append(f"{type(exc).__name__}: {exc} [{loop.time() - started:.2f}s]")
        finally:
            for sock in (conn, upstream):
                if sock is not None:
                    self._sockets.discard(sock)
                    sock.close()


async def _both(*halves) -> None:
    """Both directions of a piped connection; when one fails, the other is cancelled and awaited
    before the caller closes the sockets. A half left waiting in `sock_recv` keeps its closed
    socket's fd registered with the event loop's selector: the next socket given that fd number
    (the loop lives for the whole session) then fails its first wait with FileNotFoundError
    (epoll_ctl MOD of an fd epoll has already dropped), which cut a later test's connection."""
    tasks = [asyncio.ensure_future(half) for half in halves]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Tls:
    """The server side of one TLS connection on a non-blocking socket."""

    def __init__(self, conn: socket.socket, context: ssl.SSLContext):
        self.conn, self.loop = conn, asyncio.get_running_loop()
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.send_lock = asyncio.Lock()  # records leave in the order they were made

    async def flush(self) -> None:
        async with self.send_lock:
            data = self.outgoing.read()
            if data:
                await self.loop.sock_sendall(self.conn, data)

    async def receive(self) -> bool:
        data = await self.loop.sock_recv(self.conn, CHUNK)
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    async def handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                if not await self.receive():
                    raise EOFError("the client closed the connection during the handshake") from None
        await self.flush()

    async def refuse(self) -> None:
        """Send the alert OpenSSL made, half-close, and read until the client closes too."""
        with contextlib.suppress(OSError):
            await self.flush()
            self.conn.shutdown(socket.SHUT_WR)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    while await self.loop.sock_recv(self.conn, CHUNK):
                        pass

    async def to(self, upstream: socket.socket, seen: bytearray) -> None:
        """Client → upstream: decrypt and forward until the client is done. What the handshake's
        last read brought along (a TLS 1.3 client sends its first request with its Finished) is
        in the BIO already: it goes first."""
        kept, open_ = 0, True
        while True:
            while True:
                try:
                    data = self.obj.read(CHUNK)
                except ssl.SSLWantReadError:
                    break
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    data = b""
                if not data:
                    open_ = False
                    break
                if kept < CAPTURE:
                    seen += data[: CAPTURE - kept]
                    kept += min(len(data), CAPTURE - kept)
                await self.loop.sock_sendall(upstream, data)
            await self.flush()  # what reading made: a key update's answer, a close_notify's
            if not open_ or not await self.receive():
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)
                return

    async def from_(self, upstream: socket.socket) -> None:
        """Upstream → client: encrypt and forward until the upstream is done."""
        while data := await self.loop.sock_recv(upstream, CHUNK):
            self.obj.write(data)
            await self.flush()
        with contextlib.suppress(ssl.SSLError):
            self.obj.unwrap()
        with contextlib.suppress(OSError):
            await self.flush()
            self.conn.shutdown(socket.SHUT_WR)


# -- the material the proxy and its clients use ---------------------------------------------------

VERSIONS = {"TLSv1.3": ssl.TLSVersion.MAXIMUM_SUPPORTED, "TLSv1.2": ssl.TLSVersion.TLSv1_2}


@dataclass(frozen=True)
class Pki:
    """PEM files: the proxy's server CA, a client certificate of its client CA, and the same
    made by an unrelated CA; an expired client certificate of the right CA."""

    server_ca: Path
    cert: Path
    key: Path
    other_ca: Path
    other_cert: Path
    other_key: Path
    expired_cert: Path
    expired_key: Path
    server: trustme.CA
    client: trustme.CA


def leaf(directory: Path, name: str, issued: trustme.LeafCert) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    key.chmod(0o600)
    return cert, key


def mtls(pki: Pki, **temporal) -> dict:
    return {"tls_ca_file": pki.server_ca, "tls_cert_file": pki.cert, "tls_key_file": pki.key, **temporal}
