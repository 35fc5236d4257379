"""Keeping credentials out of everything agentcpm shows: error messages, reprs, logs, doctor's report.

A ``base_url`` may carry a user name and password (``http://user:pass@host/v1``); an API key may turn up
in a server's error message. Neither is ever printed: the URL is shown as ``http://***@host/v1`` and the
secrets as ``***``.

>>> redact_url("http://user:s3cret@gpu-box:8000/v1")
'http://***@gpu-box:8000/v1'
>>> redact("refused http://user:s3cret@gpu-box/v1 with key sk-1", "http://user:s3cret@gpu-box/v1", "sk-1")
'refused http://***@gpu-box/v1 with key ***'
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with its user name and password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL at all: show it only up to a possible userinfo part
        return url if "@" not in url else MASK + url[url.rindex("@") :]
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{MASK}@{host}").geturl()


def url_secrets(url: str) -> list[str]:
    """The credentials in ``url``: its whole userinfo and its password, raw and percent-decoded, longest first."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        netloc = url.split("/")[2] if url.count("/") >= 2 else url
    if "@" not in netloc:
        return []
    userinfo = netloc.rpartition("@")[0]
    found = {userinfo, unquote(userinfo)}
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
