"""Every request to the Hugging Face hub is bounded in time, and an unreachable hub is said so fast.

A hub (or a proxy) that accepts connections but never answers would otherwise hang a download
forever: huggingface_hub's HTTP client has no read timeout by default. Before the first download
one small request checks that the hub answers at all, within a few seconds.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlparse

CHECK_TIMEOUT = 5.0  # seconds for the first answer of the hub
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0  # between two reads of a download, not for the whole file


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def host() -> str:
    return urlparse(endpoint()).hostname or endpoint()


def hub_problem(timeout: float = CHECK_TIMEOUT) -> str | None:
    """None when the hub answers an HTTP request within `timeout` seconds; else why not, in words."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint(), method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # an HTTP answer, even an error status, means the hub is there
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        if "timed out" in str(reason):
            return f"{host()} did not answer within {timeout:g} s"
        return f"{host()} cannot be reached ({reason})"
    return None


def bound_requests() -> None:
    """Give huggingface_hub's HTTP client connect and read timeouts (it has none by default)."""
    try:
        import httpx2
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils._http import default_client_factory
    except ImportError:  # another huggingface_hub: its own defaults apply
        return

    def bounded_client():
        client = default_client_factory()
        client.timeout = httpx2.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        return client

    set_client_factory(bounded_client)
