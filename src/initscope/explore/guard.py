"""The explorer's request guard: what is refused before routing and before a byte of a body is read.

A body's size is judged from its Content-Length (chunked bodies are counted as
they stream, in the server's body reader); the Host header must name this
machine, which keeps DNS-rebinding pages out; a costly run asked for by
another web site is refused (a browser marks such requests). Split from
`server` because it is one concept: who may ask, and how much, not what is
answered.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response

from initscope.explore.api import RequestError

__all__ = ["Guard", "MAX_BODY", "COSTLY", "too_large", "host_name", "cross_site"]

MAX_BODY = 2**20
COSTLY = ("/api/run", "/api/stream", "/api/download")


def too_large() -> RequestError:
    return RequestError(413, f"The request body must be at most {MAX_BODY} bytes (a JSON object of config "
                             f"fields). Got more instead.")



class Guard:
    """ASGI middleware that refuses, before routing and before a byte of the body is read:

    - a Host header that is not one of `allowed_hosts` (400; None: any), its
      port and an IPv6 address's brackets taken off (`[::1]:8731` is `::1`);
    - a Content-Length over MAX_BODY, or one that is not a number (413, 400):
      the server's memory does not depend on what a client claims to send;
    - a run asked for by another web site (403): a browser marks such a
      request with Sec-Fetch-Site (cross-site, same-site), and with an Origin
      or a Referer naming another host; an empty form POST or a link to
      /api/download on another page would otherwise run a study here.
    """

    def __init__(self, app, allowed_hosts: tuple[str, ...] | None = None):
        self.app = app
        self.allowed = None if allowed_hosts is None else {host_name(h) for h in allowed_hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refusal(scope["path"], headers)
        if refusal is not None:
            status, message = refusal
            # Connection: close -- an unread body must not be taken for the next request.
            response = Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json",
                                headers={"Connection": "close"})
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)

    def refusal(self, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if self.allowed is not None and host_name(host) not in self.allowed:
            return 400, "Invalid host header: this server answers only its own loopback names."
        length = headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                return 400, "The Content-Length header must be a number of bytes."
            if int(length) > MAX_BODY:
                return 413, too_large().message
        if path in COSTLY and cross_site(headers, host):
            return 403, ("A run must be asked for by this server's own page or a client that is not a browser. "
                         "Got a request from another web site instead.")
        return None


def host_name(host: str) -> str:
    """The host of a Host header or an address, lower case, without port, brackets or a trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def cross_site(headers: dict[str, str], host: str) -> bool:
    """Whether a browser says that another site sent this request (see `Guard`)."""
    if headers.get("sec-fetch-site", "same-origin").lower() not in ("same-origin", "none"):
        return True
    from urllib.parse import urlsplit

    for name in ("origin", "referer"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            netloc = urlsplit(value).netloc.lower()
        except ValueError:
            return True
        if netloc != host.strip().lower():  # "null" (a sandboxed page or a file) has none
            return True
    return False
