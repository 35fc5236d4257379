"""Keeping credentials out of everything agentcpm shows: error messages, reprs, logs, doctor's report.

A ``base_url`` may carry a user name and password (``http://user:pass@host/v1``); an API key may turn up
in a server's error message. Neither is ever printed: the URL is shown as ``http://***@host/v1`` and the
secrets as ``***``.

>>> redact_url("http://user:s3cret@gpu-box:8000/v1")
'http://***@gpu-box:8000/v1'
>>> redact_url("https://gw.example/v1?api-version=2024&api-key=s3cret")
'https://gw.example/v1?api-version=2024&api-key=***'
>>> redact("refused http://user:s3cret@gpu-box/v1 with key sk-1", "http://user:s3cret@gpu-box/v1", "sk-1")
'refused http://***@gpu-box/v1 with key ***'
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
#: Query parameters whose values are credentials (``?api-key=``, ``?token=``, ``?sig=``, ...).
_SECRET_PARAM = re.compile(r"key|token|secret|sig|pass|auth|credential", re.I)


def _query_secrets(query: str) -> list[str]:
    return [value for name, value in parse_qsl(query, keep_blank_values=True) if value and _SECRET_PARAM.search(name)]


def _mask_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        pairs.append(f"{name}={MASK}" if equals and value and _SECRET_PARAM.search(unquote(name)) else pair)
    return "&".join(pairs)


def redact_url(url: str) -> str:
    """``url`` with its user name and password, and the values of credential query parameters, as ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL at all: show it only up to a possible userinfo part
        return url if "@" not in url else MASK + url[url.rindex("@") :]
    if "@" not in parts.netloc and not _query_secrets(parts.query):
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else parts.netloc
    return parts._replace(netloc=netloc, query=_mask_query(parts.query)).geturl()


def url_secrets(url: str) -> list[str]:
    """The credentials in ``url`` (userinfo, password, credential query values), raw and decoded, longest first."""
    try:
        parts = urlsplit(url)
        netloc, query = parts.netloc, parts.query
    except ValueError:
        netloc, query = (url.split("/")[2] if url.count("/") >= 2 else url), ""
    found = {s for value in _query_secrets(query) for s in (value, unquote(value)) if len(s) >= 3}
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        found |= {userinfo, unquote(userinfo)}
        password = userinfo.partition(":")[2]
        if len(password) >= 3:  # (a very short one would mask those letters all over the text)
            found |= {password, unquote(password)}
    return sorted((s for s in found if s), key=len, reverse=True)


def redact(text: str, url: str | None = None, *secrets: str | None) -> str:
    """``text`` with ``url`` shown redacted and the URL's credentials and every secret in ``secrets`` masked."""
    if url:
        redacted = redact_url(url)
        if redacted != url:
            text = text.replace(url, redacted)
            for secret in url_secrets(url):
                text = text.replace(secret, MASK)
    for word in secrets:
        if word:
            text = text.replace(word, MASK)
    return text
