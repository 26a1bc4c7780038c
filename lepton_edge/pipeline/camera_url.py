"""Camera URLs: hide their secrets before anything is logged or published, and ask a network
camera's server why an open failed.

`redact_url(text)` is the one redaction function: every log line, health message, summary and
error that can carry a camera URL goes through it. It parses rather than pattern-matches the
user info: the credentials run to the LAST `@` before the query (a password may hold `/`, `@`,
or, written raw, `?`), and query or pipeline parameters named like a secret (`password=`,
`token=`, `user-pw=`, ...) lose their value.

`diagnose(url, timeout)` exists because OpenCV says only that an open failed; FFmpeg prints the
reason (a 401, a refused connection) to the process's stderr, where no caller can read it. So
after a failed open the server is asked once more, directly: TCP connect, then one RTSP
DESCRIBE or HTTP GET with the URL's credentials (Basic or Digest, as the server asks).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import unquote

MASK = "***"
# A URL inside free text: scheme://, then up to whitespace or a quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")
# key=value in a query string or a GStreamer pipeline (`rtspsrc user-pw=...`).
# A value stops before a ':' that ends it ("...?password=x: cannot open").
_PAIR = re.compile(r"(?P<key>[A-Za-z0-9_.-]+)=(?P<value>[^&;#\s'\"]*?)(?=:?(?:[&;#\s'\"]|$))")
_SECRET_INFIXES = ("pass", "pwd", "token", "secret", "signature", "credential", "apikey",
                   "session")
_SECRET_LAST_PARTS = frozenset({"pw", "key", "auth", "sig", "authorization"})
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
_ANSWER_LIMIT = 16384  # bytes of response header read before giving up on it


def is_secret_name(name: str) -> bool:
    """True for a parameter name that holds a secret: password, passwd, pwd, pass, token, key,
    secret, auth, signature, sig, api_key, user-pw, X-Amz-Signature, ..."""
    parts = re.split(r"[-_.]", name.lower())
    joined = "".join(parts)
    return (any(word in joined for word in _SECRET_INFIXES) or parts[-1] in _SECRET_LAST_PARTS
            or parts[0] == "auth")


def redact_url(text: str) -> str:
    """`text` (a URL, or a message holding URLs or a GStreamer pipeline) with every password,
    token and secret-named parameter replaced by `***`; the user name, host, port and path
    stay. Safe on text without a URL (returned unchanged)."""
    text = _PAIR.sub(_mask_pair, text)
    return _URL.sub(lambda m: _mask_userinfo(m.group(0)), text)


def _mask_pair(m: re.Match[str]) -> str:
    if m.group("value") and is_secret_name(m.group("key")):
        return f"{m.group('key')}={MASK}"
    return m.group(0)


def _mask_userinfo(url: str) -> str:
    scheme, _, rest = url.partition("://")
    at = _userinfo_end(rest)
    if at < 0:
        return url
    user, colon, _ = rest[:at].partition(":")
    shown = f"{user}:{MASK}" if colon and user else MASK  # a lone name may itself be a token
    return f"{scheme}://{shown}{rest[at:]}"


def userinfo(url: str) -> str | None:
    """The raw user info of `url` (`user:password`, not decoded), or None when it has none."""
    rest = url.partition("://")[2]
    at = _userinfo_end(rest)
    return rest[:at] if at >= 0 else None


def _userinfo_end(rest: str) -> int:
    """Index in `rest` (the URL after `://`) of the `@` that ends the user info, or -1.

    The last `@` before the query. A password holding a raw `?` or `#` cuts that search short
    before any `/`; then the user info runs to the last `@` before the first `/`."""
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    if "@" in head:
        return head.rindex("@")
    if "/" not in head:
        authority = rest.split("/", 1)[0]
        if "@" in authority:
            return authority.rindex("@")
    return -1


@dataclass(frozen=True)
class Target:
    """What a network camera URL names: `uri` is the URL without its user info."""

    scheme: str
    host: str
    port: int
    path: str
    user: str | None
    password: str | None
    uri: str
    query_secret: bool = False  # credentials travel as query parameters (?user=..&password=..)


def parse_target(url: str) -> Target | None:
    """The parts of an rtsp(s):// or http(s):// URL, credentials percent-decoded; None for
    another scheme or a URL without a host."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        return None
    at = _userinfo_end(rest)
    userinfo, hostpart = (rest[:at], rest[at + 1:]) if at >= 0 else (None, rest)
    authority = re.split(r"[/?#]", hostpart, maxsplit=1)[0]
    path = hostpart[len(authority):] or "/"
    m = re.fullmatch(r"\[(?P<v6>[^\]]+)\](?::(?P<p6>\d+))?|(?P<host>[^:]+)(?::(?P<port>\d+))?",
                     authority)
    if m is None:
        return None
    host = m.group("v6") or m.group("host")
    port = int(m.group("p6") or m.group("port") or DEFAULT_PORTS[scheme])
    user = password = None
    if userinfo is not None:
        name, colon, secret = userinfo.partition(":")
        user, password = unquote(name), (unquote(secret) if colon else "")
    query = re.split(r"[?#]", path, maxsplit=1)[1:]
    query_secret = bool(query) and any(p.group("value") and is_secret_name(p.group("key"))
                                       for p in _PAIR.finditer(query[0]))
    return Target(scheme, host, port, path, user, password, f"{scheme}://{authority}{path}",
                  query_secret)


class _NoAnswer(Exception):
    """The server accepted the connection and sent no (or no well-formed) answer."""


def diagnose(url: str, timeout: float) -> str | None:
    """Why a network camera cannot be opened, in a few words, or None when nothing more
    specific than OpenCV's failure is known. At most two requests, each on a fresh connection
    and each given `timeout` to connect and `timeout` to answer."""
    target = parse_target(url)
    if target is None:
        return None
    where = f"{target.host}:{target.port}"
    try:
        status = _ask(target, timeout, authorization=None)
        if status[0] == 401 and target.user is not None:
            status = _ask(target, timeout, _authorization(target, status[1]))
    except socket.gaierror:
        return f"cannot resolve the host name {target.host!r} (DNS)"
    except ConnectionRefusedError:
        return f"connection refused: nothing listens on {where}"
    except TimeoutError:
        return (f"no TCP connection to {where} within {timeout:g} s (camera off, or a "
                f"firewall drops the packets)")
    except _NoAnswer as err:
        return f"{where} accepted the connection but {err}"
    except OSError as err:
        return f"cannot connect to {where} ({err.strerror or err})"
    return _explain(status[0], status[2], target)


def _explain(code: int, reason: str, target: Target) -> str | None:
    if code == 401:
        if target.user is None and not target.query_secret:
            return "unauthorized: the camera wants credentials (add user:password@ to the URL)"
        return "unauthorized: check the credentials (user name and password)"
    if code == 403:
        return "forbidden (403): this user may not open this stream"
    if code == 404:
        path = re.split(r"[?#]", target.path, maxsplit=1)[0]
        return f"not found (404): the server has no stream at {path!r}"
    if 200 <= code < 300:
        return None  # the server answers and lets us in; the stream itself is the problem
    return f"the server answered {code} {reason}".rstrip()


def _ask(target: Target, timeout: float,
         authorization: str | None) -> tuple[int, dict[str, list[str]], str]:
    """One request on a fresh connection: (status code, headers, reason phrase)."""
    rtsp = target.scheme.startswith("rtsp")
    if rtsp:
        lines = [f"DESCRIBE {target.uri} RTSP/1.0", "CSeq: 1", "Accept: application/sdp"]
    else:
        lines = [f"GET {target.path} HTTP/1.1", f"Host: {target.host}:{target.port}",
                 "Connection: close"]
    lines.append("User-Agent: lepton-edge")
    if authorization:
        lines.append(f"Authorization: {authorization}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((target.host, target.port), timeout=timeout) as sock:
        if target.scheme in ("rtsps", "https"):
            return 200, {}, ""  # reachable; no credentials go to a server not verified
        sock.sendall(request)
        return _read_answer(sock, "RTSP" if rtsp else "HTTP", timeout)


def _read_answer(sock: socket.socket, proto: str,
                 timeout: float) -> tuple[int, dict[str, list[str]], str]:
    data = b""
    try:
        while b"\r\n\r\n" not in data and len(data) < _ANSWER_LIMIT:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        if not data:
            raise _NoAnswer(f"sent no {proto} answer within {timeout:g} s (camera hung, or "
                            f"not an {proto} server)") from None
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status, *fields = head.split("\r\n")
    m = re.match(rf"{proto}/\d\.\d (\d{{3}}) ?(.*)", status)
    if m is None:
        what = "closed it without an answer" if not data else f"answered, but not in {proto}"
        raise _NoAnswer(f"{what} (not an {proto} server?)")
    headers: dict[str, list[str]] = {}
    for field in fields:
        name, _, value = field.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(m.group(1)), headers, m.group(2)


def _authorization(target: Target, headers: dict[str, list[str]]) -> str | None:
    """The Authorization header answering the server's challenges: Digest if offered, else
    Basic; None when the server offers neither."""
    challenges = headers.get("www-authenticate", [])
    user, password = target.user or "", target.password or ""
    for challenge in challenges:
        if challenge.lower().startswith("digest"):
            return _digest(challenge, user, password, target)
    if any(c.lower().startswith("basic") for c in challenges):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return None


def _digest(challenge: str, user: str, password: str, target: Target) -> str:
    """RFC 2617 Digest (MD5, with or without qop=auth), as IP cameras ask for it."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge[len("digest"):]))
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    method, uri = ("DESCRIBE", target.uri) if target.scheme == "rtsp" else ("GET", target.path)

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in params.get("qop", "").split(","):
        cnonce = os.urandom(8).hex()
        response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        fields += ["qop=auth", "nc=00000001", f'cnonce="{cnonce}"']
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
    fields.append(f'response="{response}"')
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(fields)


def classify(url: str) -> str:
    """file | network | device | gstreamer."""
    if " ! " in url or url.startswith(("nvarguscamerasrc", "v4l2src", "rtspsrc", "filesrc")):
        return "gstreamer"
    if url.isdigit() or url.startswith("/dev/video"):
        return "device"
    if "://" in url and not url.startswith("file://"):
        return "network"
    return "file"
