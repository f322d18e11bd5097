"""Credentials never reach a log: tokens, stream tickets and Authorization values are masked.

uvicorn's access log writes every request's full query string: when tokens travelled as
`?token=`, admin tokens sat in the log. Tokens no longer go in URLs, and this filter masks
anything that still looks like a credential, in every handler of every logger, the access
log included.
"""

from __future__ import annotations

import logging
import re

from service.settings import URL_PASSWORD

_PATTERNS = (
    # query parameters that carry credentials
    (re.compile(r"(?i)([?&](?:token|ticket|access_token|api_key)=)[^&\s\"']+"), r"\1[redacted]"),
    # an Authorization header value, or a bare Bearer credential
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    # gpulab's own token and ticket formats, wherever they appear
    (re.compile(r"\bglab_[A-Za-z0-9_-]{8,}"), "glab_[redacted]"),
    (re.compile(r"\bglst_[A-Za-z0-9_-]{8,}"), "glst_[redacted]"),
    # a password in a broker or database URL
    (URL_PASSWORD, r"//\1:***@"),
)


def redact(text: str) -> str:
    """The text with every credential masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactCredentials(logging.Filter):
    """Formats the record's message, masks credentials in it, and keeps the masked text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as it would
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


_FILTER = RedactCredentials()


def install_redaction() -> None:
    """Attach the filter to every handler that exists now (uvicorn's included).

    A filter on a logger misses records that propagate from its children; one on each
    handler sees every record that handler writes.
    """
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
