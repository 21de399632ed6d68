"""Student records from DynamoDB (partition key `name`)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from lambda_image.errors import InfrastructureError

log = structlog.get_logger()

_BATCH_LIMIT = 100  # BatchGetItem keys per request
_MAX_UNPROCESSED_ROUNDS = 5
_UNPROCESSED_BACKOFF_CAP_S = 1.0


def unprocessed_backoff_s(round_: int, rng: Callable[[], float] = random.random) -> float:
    """Full-jitter wait before retrying keys DynamoDB left unprocessed (AWS's advice: back off,
    they are unprocessed because the table is throttling): uniform(0, min(cap, 0.05·2^round))."""
    return rng() * min(_UNPROCESSED_BACKOFF_CAP_S, 0.05 * 2 ** round_)


class StudentRecords:
    """name → {"name", "major", "year", ...}; missing names are simply absent from the answer.

    AWS errors propagate (ClientError etc.): the invocation fails and the caller retries.
    """

    def __init__(self, client: Any, table: str, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self.table = table
        self._sleep = sleep

    def lookup(self, names: Iterable[str]) -> dict[str, dict[str, str]]:
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}
        if len(wanted) == 1:
            item = self._client.get_item(TableName=self.table, Key={"name": {"S": wanted[0]}},
                                         ConsistentRead=False).get("Item")
            return {wanted[0]: _plain(item)} if item else {}
        found: dict[str, dict[str, str]] = {}
        for start in range(0, len(wanted), _BATCH_LIMIT):
            keys = [{"name": {"S": n}} for n in wanted[start:start + _BATCH_LIMIT]]
            request: dict[str, Any] = {self.table: {"Keys": keys}}
            for round_ in range(_MAX_UNPROCESSED_ROUNDS):
                if round_:
                    self._sleep(unprocessed_backoff_s(round_))
                response = self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    record = _plain(item)
                    found[record["name"]] = record
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                raise InfrastructureError(f"BatchGetItem on {self.table} left keys unprocessed")
        return found


def _plain(item: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Flatten DynamoDB's typed attributes ({"S": "x"} / {"N": "1"}) to strings."""
    return {key: str(next(iter(value.values()))) for key, value in item.items()}
