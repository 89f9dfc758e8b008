"""Checks on the HTTP endpoints the toolkit talks to (the PAE judge, NDIF) before anything is sent."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from interp.errors import UserInputError


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, what: str, carries_key: bool) -> str:
    """``url`` if it is an http(s) URL with a host; UserInputError otherwise, and for plain http that would carry
    an API key to a host other than this machine (the key would cross the network unencrypted)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserInputError(f"{what} must be an http:// or https:// URL, not {url!r}.")
    if carries_key and parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UserInputError(
            f"{what} {url!r} is plain http and would receive the API key unencrypted; use https:// "
            "(plain http is allowed to this machine only: localhost, 127.0.0.1, ::1)."
        )
    return url
