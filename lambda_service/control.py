"""The control-plane routes beyond Invoke, as boto3's lambda client calls them (the REST routes of
the Lambda API model): the functions themselves (CreateFunction and the rest:
:mod:`~lambda_service.functions`), Function URL configs, the resource policy, event source
mappings and event invoke configs (the asynchronous-invocation settings).

`ControlPlane.route()` answers a request it owns with (status, JSON body), or None for a path it
does not own (the Invoke API in :mod:`~lambda_service.api` handles those).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lambda_service.errors import InvalidRequestContent
from lambda_service.event_invoke_config import EventInvokeConfig
from lambda_service.event_sources import EventSourceMappings
from lambda_service.functions import CONCURRENCY_GET_PREFIX, CONCURRENCY_PUT_PREFIX, FunctionsAPI
from lambda_service.permissions import Policies
from lambda_service.service import LambdaService
from lambda_service.urls import FunctionUrls

URLS_PREFIX = "/2021-10-31/functions/"
FUNCTIONS_PREFIX = "/2015-03-31/functions/"
MAPPINGS_PATH = "/2015-03-31/event-source-mappings"
EVENT_INVOKE_PREFIX = "/2019-09-25/functions/"

Answer = tuple[int, Any]


def _json(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestContent(f"Could not parse request body into json: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRequestContent("The request body must be a JSON object")
    return value


def _first(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


class ControlPlane:
    """Function URLs, policies and event source mappings of one endpoint."""

    def __init__(self, service: LambdaService, *, sqs: Callable[[], Any], host: str,
                 credentials: Mapping[str, str], poll_wait_s: int) -> None:
        self.functions = FunctionsAPI(
            service, default_concurrency=service.spec.default_concurrency or None,
            state_dir=Path(service.spec.state_dir) if service.spec.state_dir else None)
        self.policies = Policies()
        self.urls = FunctionUrls(service, self.policies, host=host, credentials=credentials)
        self.mappings = EventSourceMappings(service, sqs, poll_wait_s=poll_wait_s)

    def stop(self) -> None:
        self.mappings.stop()
        self.urls.stop()
        self.functions.stop()

    def health(self) -> dict[str, Any]:
        return {"event_source_mappings": self.mappings.stats()}

    def route(self, method: str, path: str, query: Mapping[str, list[str]],
              body: bytes) -> Answer | None:
        """Raises ServiceError (an AWS error answer) for a request it owns but refuses."""
        if path.startswith(URLS_PREFIX):
            return self._url_route(method, path[len(URLS_PREFIX):].split("/"), query, body)
        if path.startswith(EVENT_INVOKE_PREFIX):
            return self._event_invoke_route(method, path[len(EVENT_INVOKE_PREFIX):].split("/"),
                                            query, body)
        if path.startswith((CONCURRENCY_PUT_PREFIX, CONCURRENCY_GET_PREFIX)):
            return self.functions.route(method, path, _json(body))
        if path.startswith(FUNCTIONS_PREFIX) or path == FUNCTIONS_PREFIX.rstrip("/"):
            parts = path[len(FUNCTIONS_PREFIX):].split("/")
            if len(parts) >= 2 and parts[1] == "policy":
                return self._policy_route(method, parts, query, body)
            if len(parts) == 2 and parts[1] == "invocations":
                return None  # the Invoke API (lambda_service.api)
            return self.functions.route(method, path, _json(body) if method in ("POST", "PUT")
                                        else {})
        if path == MAPPINGS_PATH or path.startswith(MAPPINGS_PATH + "/"):
            rest = path[len(MAPPINGS_PATH):].strip("/")
            return self._mapping_route(method, urllib.parse.unquote(rest), query, body)
        return None

    def _url_route(self, method: str, parts: list[str], query: Mapping[str, list[str]],
                   body: bytes) -> Answer | None:
        if len(parts) != 2:
            return None
        name, what = urllib.parse.unquote(parts[0]), parts[1]
        qualifier = _first(query, "Qualifier")
        if what == "urls" and method == "GET":
            return 200, self.urls.list(name)
        if what != "url":
            return None
        if method == "POST":
            return 201, self.urls.create(name, qualifier, _json(body))
        if method == "GET":
            return 200, self.urls.get(name, qualifier)
        if method == "PUT":
            return 200, self.urls.update(name, qualifier, _json(body))
        if method == "DELETE":
            self.urls.delete(name, qualifier)
            return 204, None
        return None

    def _policy_route(self, method: str, parts: list[str], query: Mapping[str, list[str]],
                      body: bytes) -> Answer | None:
        service = self.urls.service
        pool = service.resolve(urllib.parse.unquote(parts[0]), _first(query, "Qualifier"))
        name = pool.function.name
        if len(parts) == 2 and method == "POST":
            return 201, self.policies.add(name, service.spec.function_arn(name), _json(body))
        if len(parts) == 2 and method == "GET":
            return 200, self.policies.get(name)
        if len(parts) == 3 and method == "DELETE":
            self.policies.remove(name, urllib.parse.unquote(parts[2]),
                                 _first(query, "RevisionId"))
            return 204, None
        return None

    def _event_invoke_route(self, method: str, parts: list[str],
                            query: Mapping[str, list[str]], body: bytes) -> Answer | None:
        if len(parts) not in (2, 3) or parts[1] != "event-invoke-config" or (
                len(parts) == 3 and parts[2] != "list"):
            return None
        service = self.urls.service
        pool = service.resolve(urllib.parse.unquote(parts[0]), _first(query, "Qualifier"))
        name = pool.function.name
        arn = service.spec.function_arn(name)
        configs = service.event_invoke_configs

        def answer(config: EventInvokeConfig) -> Answer:
            return 200, config.to_json(arn)

        if len(parts) == 3:
            if method != "GET":
                return None
            return 200, {"FunctionEventInvokeConfigs": [c.to_json(arn)
                                                        for c in configs.list(name)]}
        if method == "PUT":
            return answer(configs.put(name, _json(body)))
        if method == "POST":
            return answer(configs.update(name, arn, _json(body)))
        if method == "GET":
            return answer(configs.get(name, arn))
        if method == "DELETE":
            configs.delete(name, arn)
            return 204, None
        return None

    def _mapping_route(self, method: str, mapping_id: str, query: Mapping[str, list[str]],
                       body: bytes) -> Answer | None:
        if not mapping_id:
            if method == "POST":
                return 202, self.mappings.create(_json(body))
            if method == "GET":
                return 200, self.mappings.list(_first(query, "EventSourceArn"),
                                               _first(query, "FunctionName"))
            return None
        if method == "GET":
            return 200, self.mappings.get(mapping_id)
        if method == "PUT":
            return 202, self.mappings.update(mapping_id, _json(body))
        if method == "DELETE":
            return 202, self.mappings.delete(mapping_id)
        return None
