"""The log scrubber: secret values and URL userinfo taken out of a finished log line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote

from credentials.redact import REDACTED

# Credentials in any URL a library puts into a message (scheme://user:password@host).
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@\"']+@")
# Shorter values would blank out ordinary words, and are no secret anyway.
MIN_SECRET_CHARS = 4


class Scrubber:
    """The last line of defence: a secret value that reaches a log line anyway (in a library's
    error message, say) is replaced by REDACTED, as it is, JSON-escaped or percent-encoded, and
    so is the userinfo of any URL. Nothing should depend on it: our own messages carry no secret.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms = {
            form
            for secret in secrets
            if len(secret) >= MIN_SECRET_CHARS
            for form in (secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote(secret))
        }
        self._forms = sorted(forms, key=len, reverse=True)  # longest first: no partial leftovers

    def scrub(self, line: str) -> str:
        for form in self._forms:
            line = line.replace(form, REDACTED)
        return _URL_USERINFO.sub(rf"\1{REDACTED}@", line)
