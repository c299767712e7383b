"""Client side of /healthz for `bmsgw healthcheck` (stdlib only, so the probe starts fast)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from bmsgw.config import WebSection

__all__ = ["base_url", "probe"]


def base_url(cfg: WebSection, port: int | None = None) -> str:
    """http://host:port of the web server as a local client reaches it (wildcard hosts → loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg.host, cfg.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port if port is not None else cfg.port}"


def probe(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    """GET `url` (a /healthz URL): (healthy, one-line reason)."""
    if not url.startswith(("http://", "https://")):
        return False, f"unhealthy: {url} is not an http(s) URL"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(65536)
            code = resp.status
    except urllib.error.HTTPError as exc:
        body, code = exc.read(65536), exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"unhealthy: {url} unreachable: {reason}"
    try:
        doc = json.loads(body)
        summary = (
            f"status={doc['status']} packs_online={doc['packs_online']} "
            f"last_step_age_s={doc['last_step_age_s']}"
        )
    except (ValueError, KeyError, TypeError):
        return False, f"unhealthy: {url} answered HTTP {code}, not a bmsgw health document"
    if code == 200 and doc["status"] == "ok":
        return True, f"healthy: {summary}"
    return False, f"unhealthy: HTTP {code} {summary}"
