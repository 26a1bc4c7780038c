"""Misbehaving camera servers on 127.0.0.1, real sockets, for the source tests.

    with BlackHole() as hole:          # accepts TCP, never answers (a hung camera)
        url = hole.url                 # rtsp://127.0.0.1:PORT/stream
    with BlackHole(listen=False) as hole:   # port reserved, connections refused ...
        hole.listen()                  # ... until now: from here on, a black hole
    with AuthServer("rtsp", user="admin", password="p/w@x", scheme="Digest") as srv:
        srv.requests                   # every request head received, decoded
        # 401 unless the Authorization header is right; then 200 with no SDP body

Plus `short_clip()`: a 1 s, 25 fps MJPEG copy of samples/bikes.mp4, so a looping file camera
reopens its file every second (every reopen is an FFmpeg open).
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import threading
from pathlib import Path
from types import TracebackType

import cv2

REPO = Path(__file__).resolve().parents[2]
BIKES = REPO / "samples" / "bikes.mp4"


def short_clip(path: Path, frames: int = 25, fps: float = 25.0) -> Path:
    """The first `frames` frames of bikes.mp4 at 320x136, MJPEG in AVI, written to `path`."""
    cap = cv2.VideoCapture(str(BIKES))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 136))
    try:
        for _ in range(frames):
            ok, image = cap.read()
            if not ok:
                raise RuntimeError(f"{BIKES}: fewer than {frames} frames")
            out.write(cv2.resize(image, (320, 136)))
    finally:
        cap.release()
        out.release()
    return path


class _Server:
    """A listening socket on 127.0.0.1 with an accept thread; subclasses serve connections."""

    scheme = "rtsp"

    def __init__(self, *, listen: bool = True) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._closed = threading.Event()
        if listen:
            self.listen()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/stream"

    def listen(self) -> None:
        """Start accepting (until then, the bound port refuses connections)."""
        self._sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        """Hold the connection and say nothing."""

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        for conn in self.connections:
            conn.close()

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class BlackHole(_Server):
    """Accepts TCP connections and never sends a byte: a camera whose firmware hung."""


class AuthServer(_Server):
    """An RTSP or HTTP server that answers every request 401 with a Basic or Digest challenge,
    unless it carries the right credentials; then 200 (RTSP: an empty DESCRIBE answer, which
    no player can use, so an open still fails, but not for want of credentials)."""

    REALM = "camera"
    NONCE = "0123456789abcdef"

    def __init__(self, scheme: str = "rtsp", *, user: str = "admin", password: str = "secret",
                 auth: str = "Basic") -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.auth = auth
        self.requests: list[str] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while True:
            try:
                chunk = conn.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            data += chunk
            while b"\r\n\r\n" in data:
                head, data = data.split(b"\r\n\r\n", 1)
                text = head.decode("latin-1")
                self.requests.append(text)
                try:
                    conn.sendall(self._answer(text))
                except OSError:
                    return

    def _answer(self, head: str) -> bytes:
        lines = head.split("\r\n")
        method, uri, _ = [*lines[0].split(" "), "", "", ""][:3]
        fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        proto = "RTSP/1.0" if self.scheme == "rtsp" else "HTTP/1.1"
        cseq = f"CSeq: {fields.get('cseq', '1')}\r\n" if self.scheme == "rtsp" else ""
        if self._authorized(fields.get("authorization", ""), method, uri):
            return f"{proto} 200 OK\r\n{cseq}Content-Length: 0\r\n\r\n".encode()
        challenge = (f'Digest realm="{self.REALM}", nonce="{self.NONCE}"'
                     if self.auth == "Digest" else f'Basic realm="{self.REALM}"')
        return (f"{proto} 401 Unauthorized\r\n{cseq}WWW-Authenticate: {challenge}\r\n"
                f"Content-Length: 0\r\n\r\n").encode()

    def _authorized(self, header: str, method: str, uri: str) -> bool:
        if self.auth == "Basic":
            good = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return header == f"Basic {good}"
        params = dict(re.findall(r'(\w+)="([^"]*)"', header))
        if not header.startswith("Digest") or params.get("username") != self.user:
            return False

        def md5(text: str) -> str:
            return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

        ha1 = md5(f"{self.user}:{self.REALM}:{self.password}")
        ha2 = md5(f"{method}:{params.get('uri', '')}")
        return params.get("response") == md5(f"{ha1}:{self.NONCE}:{ha2}")
