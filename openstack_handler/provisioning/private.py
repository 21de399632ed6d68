"""The video function on a private function service — our Lambda service on a VM — with the
frame function beside it (the web tier's images), and the daemon's targets that put it first.

The service answers Lambda's API, so this converges the function with the calls used on AWS
(``GetFunction``, ``CreateFunction``, ``UpdateFunctionCode``, ``UpdateFunctionConfiguration``,
``PutFunctionConcurrency``), reading first and writing only what differs: a second run changes
nothing. Two kinds of code, as the service runs them:

- a **zip** (a VM: the ONNX worker mode): this installation's ``lambda_image`` package and the
  gallery, its bytes fixed (sorted members, one timestamp) so that an unchanged package has an
  unchanged ``CodeSha256``; the models are the service's own (the handler role installs them at
  ``/opt/handler-functions/models``);
- an **image** (a host that runs images): ``Code.ImageUri`` in that host's container storage, or
  an ``oci-archive:`` path there.

The service has no execution roles: the function's credentials for S3, SQS and DynamoDB come in
its environment, from a profile the operator names (kept in the service's state directory, 0700,
never in a log line here).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from openstack_handler.provisioning.aws import function_config_diff
from openstack_handler.provisioning.spec import Change, ProvisioningError

log = structlog.get_logger()

#: where the handler role installs the exported models on a VM
VM_MODEL_DIR = "/opt/handler-functions/models"
#: where the gallery lies in the zip (GALLERY_PATH is relative to the task root, as on Lambda)
ZIP_GALLERY = "gallery/encoding"
ZIP_HANDLER = "lambda_image.handlers.s3_handler"
#: the camera path's one-stage entry point: the web tier's images
FRAME_HANDLER = "lambda_image.handlers.frame_handler"
#: the fixed timestamp of every member: the same package gives the same archive, byte for byte
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class PrivateFunction:
    """What to run on the private service, and how many of it at once."""

    name: str
    slots: int
    timeout_s: int
    memory_mb: int
    environment: Mapping[str, str]
    #: the image (or ``oci-archive:PATH``) on the service's host; else a zip is made
    image_uri: str | None = None
    command: str = ZIP_HANDLER
    #: the gallery file put into the zip (zip only)
    gallery: Path | None = None

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ProvisioningError(f"private slots must be at least 1, not {self.slots}")
        if (self.image_uri is None) == (self.gallery is None):
            raise ProvisioningError("the private function needs an image URI or a gallery for "
                                    "its zip, not both")


def function_zip(gallery: Path | None) -> bytes:
    """The deployment package: lambda_image/*.py (this installation's) and, given one, the
    gallery at :data:`ZIP_GALLERY`."""
    found = importlib.util.find_spec("lambda_image")
    if found is None or not found.submodule_search_locations:
        raise ProvisioningError("the lambda_image package is not installed here")
    package = Path(next(iter(found.submodule_search_locations)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        members = [(f"lambda_image/{p.name}", p.read_bytes())
                   for p in sorted(package.glob("*.py"))]
        if gallery is not None:
            members.append((ZIP_GALLERY, gallery.read_bytes()))
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def ensure_private_function(lam: Any, function: PrivateFunction, *,
                            wait_s: float = 300.0) -> list[Change]:
    """Create the function on the service *lam* talks to, or converge it to *function*; then
    its reserved concurrency (its slots), then wait until it is Active."""
    where = f"{function.name} (private)"
    changes: list[Change] = []
    if function.image_uri is not None:
        code: dict[str, Any] = {"ImageUri": function.image_uri}
        desired: dict[str, Any] = {"ImageConfig": {"Command": [function.command]}}
        package = "Image"
    else:
        assert function.gallery is not None
        archive = function_zip(function.gallery)
        code = {"ZipFile": archive}
        desired = {"Handler": function.command, "Runtime": "python3.11"}
        package = "Zip"
    desired |= {"Timeout": function.timeout_s, "MemorySize": function.memory_mb,
                "Environment": {"Variables": dict(function.environment)}}
    waiter = {"Delay": 1, "MaxAttempts": max(1, int(wait_s))}
    try:
        current = lam.get_function(FunctionName=function.name)
    except lam.exceptions.ResourceNotFoundException:
        lam.create_function(FunctionName=function.name, PackageType=package, Code=code,
                            Role="arn:aws:iam::000000000000:role/private-function-service",
                            **desired)
        changes.append(Change("private function", where, "created", package))
    else:
        config = current["Configuration"]
        if config.get("PackageType") != package:
            raise ProvisioningError(f"{where} exists with package type "
                                    f"{config.get('PackageType')}, not {package}: delete it "
                                    "first")
        if package == "Image":
            stale = current.get("Code", {}).get("ImageUri") != function.image_uri
        else:
            digest = base64.b64encode(hashlib.sha256(archive).digest()).decode()
            stale = config.get("CodeSha256") != digest
        if stale:
            lam.update_function_code(FunctionName=function.name, **code)
            lam.get_waiter("function_updated_v2").wait(FunctionName=function.name,
                                                       WaiterConfig=waiter)
            changes.append(Change("private function", where, "updated", "code"))
        differing = function_config_diff(config, desired)
        if differing:
            lam.update_function_configuration(FunctionName=function.name,
                                              **{k: desired[k] for k in differing})
            lam.get_waiter("function_updated_v2").wait(FunctionName=function.name,
                                                       WaiterConfig=waiter)
            changes.append(Change("private function", where, "updated", ", ".join(differing)))
    reserved = lam.get_function_concurrency(FunctionName=function.name).get(
        "ReservedConcurrentExecutions")
    if reserved != function.slots:
        lam.put_function_concurrency(FunctionName=function.name,
                                     ReservedConcurrentExecutions=function.slots)
        changes.append(Change("private function", where, "updated",
                              f"reserved concurrency {function.slots}"))
    lam.get_waiter("function_active_v2").wait(FunctionName=function.name, WaiterConfig=waiter)
    for change in changes:
        log.info("provisioned", kind=change.kind, name=change.name, action=change.action,
                 detail=change.detail)
    return changes


def private_targets(*, function_name: str, endpoint_url: str, profile: str | None,
                    private_slots: int, aws_slots: int) -> list[dict[str, Any]]:
    """The daemon's ``targets``: the private service first, AWS's Lambda past it."""
    private: dict[str, Any] = {"name": "private", "endpoint_url": endpoint_url,
                               "function_name": function_name, "slots": private_slots}
    if profile:
        private["profile"] = profile
    return [private, {"name": "aws", "function_name": function_name, "slots": aws_slots}]
