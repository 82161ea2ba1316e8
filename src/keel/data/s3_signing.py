"""AWS Signature Version 4 (header form) for S3 requests, as keel.data.s3http sends them.

Every header passed is signed except those in UNSIGNED; the signing key of the day is derived
once and kept. Checked against botocore's own signer in the tests.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Left out of the signature: a proxy may rewrite them, and the checksum covers the body.
UNSIGNED = frozenset({"content-length", "content-type"})


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


class Signer:
    """AWS Signature Version 4 (header form) for S3 requests; every header passed is signed
    except those in UNSIGNED.

    >>> Signer("us-east-1").headers("GET", "127.0.0.1:8333", "/b/k", {}, EMPTY_SHA256,
    ...                              Credentials("AKID", "secret"))["Authorization"][:16]
    'AWS4-HMAC-SHA256'
    """

    def __init__(self, region: str) -> None:
        self.region = region
        self._keys: dict[tuple[str, str], bytes] = {}

    def headers(
        self,
        method: str,
        host: str,
        path: str,
        extra: dict[str, str],
        payload_sha256: str,
        credentials: Credentials | None,
        *,
        query: dict[str, str] | None = None,
        now: float | None = None,
    ) -> dict[str, str]:
        """``extra`` plus the headers that authenticate the request (none when anonymous)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        headers = {**extra, "Host": host, "x-amz-content-sha256": payload_sha256}
        if credentials is None:
            return headers
        headers["x-amz-date"] = stamp
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        signed = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
        names = sorted(n for n in signed if n not in UNSIGNED)
        canonical = "\n".join(
            [
                method,
                path,
                canonical_query(query or {}),
                "".join(f"{n}:{signed[n]}\n" for n in names),
                ";".join(names),
                payload_sha256,
            ]
        )
        scope = f"{stamp[:8]}/{self.region}/s3/aws4_request"
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
        key = self._key(credentials.secret_key, stamp[:8])
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return headers

    def _key(self, secret: str, day: str) -> bytes:
        cached = self._keys.get((secret, day))
        if cached is None:
            key = f"AWS4{secret}".encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {(secret, day): key}  # one day's key is all that is ever needed
            cached = key
        return cached


def canonical_query(query: dict[str, str]) -> str:
    """A query string as SigV4 signs it — and as it is sent: names sorted, every character
    but ``A-Za-z0-9-_.~`` percent-encoded (``/`` too)."""
    return "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
        for name, value in sorted(query.items())
    )
