"""The boto3 clients the daemon and its commands build: one endpoint rule for every service.

Every client is created with the endpoint the settings give for its service
(``sqs_endpoint_url`` / ``lambda_endpoint_url``, else ``endpoint_url``). Only when the settings
name none does boto3's own configuration decide (``AWS_ENDPOINT_URL_<SERVICE>``,
``AWS_ENDPOINT_URL``, the profile's ``endpoint_url``), else AWS itself. So a settings file that
names its endpoints (``local up`` writes them) is self-sufficient: variables exported in some
other shell, or an ``~/.aws`` profile, cannot send its requests elsewhere.

Refusing to mix: queue URLs on this machine (loopback) while SQS or Lambda would be called at AWS
— the local cloud's queue URLs, signed with real credentials, sent to real AWS — is a
configuration error, and so is the converse (AWS's queue URLs sent to an SQS on this machine).
The message names each value and where it came from (:class:`Endpoint`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import NoCredentialsError

from openstack_handler.daemon.errors import ConfigError
from openstack_handler.daemon.invoker import USER_AGENT, lambda_client_config
from openstack_handler.daemon.settings import ENV_PREFIX, SQS_ATTEMPTS, Settings, TargetSettings

LABELS = {"sqs": "SQS", "lambda": "Lambda"}
QUEUE_SETTINGS = ("input_queue_url", "output_queue_url", "input_dlq_url", "output_dlq_url",
                  "request_queue_url", "request_dlq_url", "failure_queue_url")
_AWS_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")


@dataclass(frozen=True)
class Endpoint:
    """The URL one client calls and where that URL came from, in words."""

    service: str
    url: str
    source: str

    @property
    def label(self) -> str:
        return LABELS.get(self.service, self.service)

    def __str__(self) -> str:
        return f"{self.url} ({self.source})"

    def unreachable(self, exc: BaseException) -> str:
        """One line for an error reaching this endpoint: which URL was tried, and why that one."""
        if isinstance(exc, NoCredentialsError):
            return (f"no AWS credentials to call {self.label} at {self}: boto3 found none "
                    "(environment, ~/.aws, instance profile); a local cloud takes any, e.g. the "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY that `local up` prints")
        detail = " ".join(str(exc).split())
        return f"cannot reach {self.label} at {self}: {type(exc).__name__}: {detail}"


def is_aws(url: str | None) -> bool:
    host = (urlsplit(url).hostname or "") if url else ""
    return host.endswith(_AWS_SUFFIXES)


def is_local(url: str | None) -> bool:
    """True for a URL on this machine: localhost or a loopback address."""
    host = (urlsplit(url).hostname or "") if url else ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configured_endpoint(settings: Settings, service: str) -> tuple[str | None, str | None]:
    """(URL, setting name) the settings give for *service*, or (None, None)."""
    for name in (f"{service}_endpoint_url", "endpoint_url"):
        value = getattr(settings, name)
        if value:
            return value, name
    return None, None


def endpoint_of(settings: Settings, service: str, url: str) -> Endpoint:
    """*url* (what a client of *service* calls) with where it came from."""
    _, name = configured_endpoint(settings, service)
    if name is not None:
        return Endpoint(service, url, f"{name} from {settings.origin(name)}")
    env = settings.provenance.aws_endpoint_env
    for var in (f"AWS_ENDPOINT_URL_{service.upper()}", "AWS_ENDPOINT_URL"):
        if env.get(var, "").rstrip("/") == url.rstrip("/"):
            return Endpoint(service, url, f"{var} in the environment")
    if is_aws(url):
        where = settings.provenance.file or "the settings"
        return Endpoint(service, url, (
            f"AWS itself: no {service}_endpoint_url or endpoint_url in {where}, and neither "
            f"{ENV_PREFIX}ENDPOINT_URL nor AWS_ENDPOINT_URL_{service.upper()} nor "
            "AWS_ENDPOINT_URL is set"))
    return Endpoint(service, url, "boto3's configuration: AWS_ENDPOINT_URL* or the AWS "
                                  "profile's endpoint_url")


def mixing_problems(settings: Settings, endpoints: Iterable[Endpoint]) -> list[str]:
    """Why these endpoints must not serve these settings (empty: they agree)."""
    queues = {name: getattr(settings, name) for name in QUEUE_SETTINGS if getattr(settings, name)}
    local = [name for name, url in queues.items() if is_local(url)]
    at_aws = [name for name, url in queues.items() if is_aws(url)]
    problems = []
    for endpoint in endpoints:
        if local and is_aws(endpoint.url):
            hint = (f"set {endpoint.service}_endpoint_url (or endpoint_url) to the local cloud's"
                    " endpoint; `openstack-handler local up --config-out FILE` writes a config"
                    " that has them")
            if endpoint.service == "sqs":
                base = urlsplit(queues[local[0]])
                hint = (f"set endpoint_url = \"{base.scheme}://{base.netloc}\" (the queues' "
                        "own host); `openstack-handler local up --config-out FILE` writes it")
            problems.append(
                f"{_names(settings, local)} on this machine, but {endpoint.label} would be "
                f"called at {endpoint}: refusing to send a local config's requests to AWS; "
                f"{hint}")
        elif at_aws and endpoint.service == "sqs" and is_local(endpoint.url):
            problems.append(
                f"{_names(settings, at_aws)} at AWS, but SQS would be called at {endpoint}, "
                "on this machine: unset that endpoint (a local cloud's exports?) or use the "
                "local cloud's config")
    return problems


def _names(settings: Settings, names: list[str]) -> str:
    """'input_queue_url = "http://…" (from /x.toml)' and similar, for one or more settings."""
    first = names[0]
    text = f"{first} = {getattr(settings, first)!r} (from {settings.origin(first)})"
    if len(names) > 1:
        text += f" and {len(names) - 1} more queue URL(s)"
    return text + (" are" if len(names) > 1 else " is")


def check_endpoints(settings: Settings, endpoints: Iterable[Endpoint]) -> None:
    """Raise :class:`ConfigError` when the endpoints and the settings' queues do not agree."""
    problems = mixing_problems(settings, endpoints)
    if problems:
        raise ConfigError("\n  ".join(problems))


def build_client(settings: Settings, service: str, *, config: Config,
                 session: Any = None, target: TargetSettings | None = None
                 ) -> tuple[Any, Endpoint]:
    """A client of *service* on the settings' endpoint (a *target*'s own ``endpoint_url`` when
    it names one), and that endpoint; refuses to mix."""
    session = session or boto3.session.Session(region_name=settings.region)
    url, _ = configured_endpoint(settings, service)
    if target is not None and target.endpoint_url:
        url = target.endpoint_url
    client = session.client(service, endpoint_url=url, config=config)
    if target is not None and target.endpoint_url:
        endpoint = Endpoint(service, client.meta.endpoint_url,
                            f"target {target.name}'s endpoint_url from {settings.origin('targets')}")
    else:
        endpoint = endpoint_of(settings, service, client.meta.endpoint_url)
    check_endpoints(settings, [endpoint])
    return client, endpoint


def sqs_client_config(settings: Settings) -> Config:
    """SQS: read timeout above the long-poll wait, sockets for every thread, standard retries
    (few: our loops back off and log outages themselves)."""
    return Config(read_timeout=settings.sqs_read_timeout_s, connect_timeout=5,
                  retries={"mode": "standard", "max_attempts": SQS_ATTEMPTS},
                  max_pool_connections=settings.total_slots + 8, user_agent=USER_AGENT)


def sqs_client(settings: Settings, *, session: Any = None) -> tuple[Any, Endpoint]:
    return build_client(settings, "sqs", config=sqs_client_config(settings), session=session)


def lambda_client(settings: Settings, *, session: Any = None) -> tuple[Any, Endpoint]:
    config = lambda_client_config(function_timeout_s=settings.function_timeout_s,
                                  concurrency=settings.concurrency)
    return build_client(settings, "lambda", config=config, session=session)


def env_overridden(settings: Settings, endpoint: Endpoint) -> list[str]:
    """boto3 endpoint variables that a settings endpoint overrides (worth a warning)."""
    _, name = configured_endpoint(settings, endpoint.service)
    if name is None:
        return []
    env = settings.provenance.aws_endpoint_env
    return [f"{var}={env[var]}" for var in (f"AWS_ENDPOINT_URL_{endpoint.service.upper()}",
                                            "AWS_ENDPOINT_URL")
            if env.get(var) and env[var].rstrip("/") != endpoint.url.rstrip("/")]
