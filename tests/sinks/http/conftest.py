"""HTTP clients for the sink tests: plain urllib (GET, multipart POST) and an MJPEG reader."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from typing import Any

import cv2
import numpy as np


def get(url: str, headers: dict[str, str] | None = None,
        timeout: float = 10) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def get_json(url: str, **kw: Any) -> tuple[int, Any]:
    status, body, _ = get(url, **kw)
    return status, json.loads(body)


def post_form(url: str, fields: dict[str, str | tuple[str, bytes]],
              timeout: float = 60) -> tuple[int, Any]:
    """multipart/form-data: a str value is a plain field, (filename, bytes) a file."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data = value
            head = (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n")
        else:
            head, data = f'Content-Disposition: form-data; name="{name}"\r\n\r\n', value.encode()
        parts.append(f"--{boundary}\r\n".encode() + head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class MjpegViewer(threading.Thread):
    """Reads a multipart MJPEG stream on its own thread and keeps the JPEGs' sizes and the last
    one, as a browser would."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.frames = 0
        self.last: bytes | None = None
        self.sizes: list[tuple[int, int]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=30) as resp:
                ctype = resp.headers["Content-Type"]
                assert ctype.startswith("multipart/x-mixed-replace"), ctype
                while not self.stop.is_set():
                    line = resp.readline()
                    if not line:
                        return
                    if not line.lower().startswith(b"content-length:"):
                        continue
                    n = int(line.split(b":")[1])
                    resp.readline()  # the blank line
                    data = resp.read(n)
                    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                    assert img is not None, "an MJPEG part is not a JPEG"
                    self.sizes.append((img.shape[1], img.shape[0]))
                    self.last = data
                    self.frames += 1
        except BaseException as err:  # reported by the test
            if not self.stop.is_set():
                self.error = err
