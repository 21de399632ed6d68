"""SigV4 verification for AWS_IAM Function URLs: recompute the signature with botocore's own signer
against the local cloud's credentials and compare in constant time.

What is checked, as Lambda checks it: the `Authorization` header is AWS4-HMAC-SHA256 with a
credential scope for service `lambda` in this region; the access key is one this cloud knows;
`X-Amz-Date` is within five minutes of now; the signed headers include `host` (and
`x-amz-date`); a given `X-Amz-Content-SHA256` is the body's hash; and the signature over exactly
the signed headers, the path, the query and the body matches. Any failure is an
:class:`AccessDenied` whose reason goes to the log only (the caller sees a plain 403).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
#: How far `X-Amz-Date` may be from the server's clock (SigV4's documented allowance).
MAX_SKEW = timedelta(minutes=5)
_AUTH = re.compile(r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
                   r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})$")


class AccessDenied(Exception):
    """The request is not signed, or not signed right, by a known identity."""


class MissingAuthentication(AccessDenied):
    """The request carries no Authorization header at all."""


class UnknownAccessKey(AccessDenied):
    """The request is signed with an access key that is not one of the credentials."""


@dataclass(frozen=True)
class Caller:
    """Who signed a verified request (for the event's `requestContext.authorizer.iam`)."""

    access_key: str
    account_id: str

    def authorizer(self) -> dict[str, object]:
        return {"iam": {"accessKey": self.access_key, "accountId": self.account_id,
                        "callerId": self.access_key, "cognitoIdentity": None,
                        "principalOrgId": None,
                        "userArn": f"arn:aws:iam::{self.account_id}:root",
                        "userId": self.account_id}}


def verify(*, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes,
           credentials: Mapping[str, str], region: str, account_id: str,
           service: str = "lambda", now: datetime | None = None) -> Caller:
    """The caller of a request signed with SigV4 by one of *credentials* (access key → secret);
    raises AccessDenied otherwise."""
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    authorization = (by_name.get("authorization") or [""])[0].strip()
    if not authorization:
        raise MissingAuthentication("missing Authorization header")
    match = _AUTH.match(authorization)
    if not match:
        raise AccessDenied("the Authorization header is not AWS4-HMAC-SHA256")
    parts = match["credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise AccessDenied("malformed credential scope")
    access_key, date, scope_region, scope_service, _ = parts
    if scope_service != service or scope_region != region:
        raise AccessDenied(f"credential scope {scope_region}/{scope_service} is not "
                           f"{region}/{service}")
    secret = credentials.get(access_key)
    if secret is None:
        raise UnknownAccessKey("unknown access key")
    amz_date = (by_name.get("x-amz-date") or [""])[0]
    try:
        signed_at = datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError as exc:
        raise AccessDenied("missing or malformed X-Amz-Date") from exc
    if amz_date[:8] != date:
        raise AccessDenied("X-Amz-Date does not match the credential scope's date")
    now = now or datetime.now(UTC)
    if abs(now - signed_at) > MAX_SKEW:
        raise AccessDenied("signature expired (X-Amz-Date is more than 5 minutes from now)")
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        raise AccessDenied("host and x-amz-date must be signed")
    missing = [h for h in signed if h not in by_name]
    if missing:
        raise AccessDenied(f"signed headers not in the request: {missing}")
    body_hash = hashlib.sha256(body).hexdigest()
    claimed_hash = (by_name.get("x-amz-content-sha256") or [None])[0]
    if claimed_hash is not None and claimed_hash != body_hash:
        raise AccessDenied("X-Amz-Content-SHA256 is not the body's hash")
    host = by_name["host"][0]
    request = AWSRequest(method=method.upper(), url=f"http://{host}{target}", data=body,
                         headers={h: ",".join(by_name[h]) for h in signed})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret), service, region)
    if signer.signed_headers(signer.headers_to_sign(request)) != match["signed"]:
        raise AccessDenied("the signed headers cannot be reproduced")
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise AccessDenied("signature mismatch")
    return Caller(access_key=access_key, account_id=account_id)
