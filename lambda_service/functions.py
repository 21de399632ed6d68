"""Functions made and changed with the calls operators make on AWS: CreateFunction, GetFunction,
UpdateFunctionConfiguration, UpdateFunctionCode, DeleteFunction, ListFunctions and reserved
concurrency (Put/Get/DeleteFunctionConcurrency), on their REST routes, with Lambda's error types.

Two kinds of code, as on Lambda:

- ``PackageType: Image`` with ``Code.ImageUri`` naming an image in this host's container storage
  (``localhost/face-recognition:<tag>``) or an OCI archive on this host
  (``oci-archive:/path/fr.tar``, imported into the storage): run as Lambda runs images
  (:mod:`lambda_service.environment`);
- ``PackageType: Zip`` with ``Code.ZipFile`` and a ``Handler``: the archive is unpacked into a
  directory of its own, put first on the workers' ``sys.path`` (the service's own Python runs
  it: the ONNX worker mode on a host that cannot run images).

A function's slots are its reserved concurrency (``PutFunctionConcurrency``); without one it gets
the service's default (the spec's ``default_concurrency``, else this host's cores). Any change
starts fresh environments for new invocations; the old ones finish what they run first
(:meth:`LambdaService.replace_function`).

Functions outlive the process, as Lambda's do, when the service has a state directory (the
spec's ``state_dir``; the private service's is systemd's ``StateDirectory=``): each call that
changes a function rewrites ``functions.json`` there (atomically), zip code is unpacked under
``code/`` beside it, and a restarted service serves them again before it says it is ready.
Without one they live as long as the process (the tests' throwaway services).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import urllib.parse
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from lambda_service.errors import (
    InvalidParameterValue,
    PreconditionFailed,
    ResourceConflict,
)
from lambda_service.service import LambdaService
from lambda_service.spec import FunctionSpec, SpecError

log = structlog.get_logger()

FUNCTIONS_PATH = "/2015-03-31/functions"
CONCURRENCY_PUT_PREFIX = "/2017-10-31/functions/"
CONCURRENCY_GET_PREFIX = "/2019-09-30/functions/"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PYTHON = re.compile(r"^python3\.\d+$")
#: Lambda's limit on a ZipFile uploaded in the request (50 MB zipped)
MAX_ZIP_BYTES = 50 * 1024 * 1024
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
#: what the runtime sets itself (Lambda reserves more: AWS_ACCESS_KEY_ID and the rest of the
#: credentials come from the execution role there; this service has no roles, so a function's
#: credentials for S3, SQS and DynamoDB come in its Environment)
_RESERVED_VARIABLES = frozenset({"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EXECUTION_ENV",
                                 "_HANDLER", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR"})

Answer = tuple[int, Any]


@dataclass
class FunctionRecord:
    """What Lambda remembers of a function beyond how to run it."""

    role: str = ""
    description: str = ""
    runtime: str = ""
    code_sha256: str = ""
    code_size: int = 0
    reserved: int | None = None  #: reserved concurrency, when one was put
    image_uri: str = ""  #: the ImageUri given (an archive's: the function runs its image ID)
    revision: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    last_modified: str = dataclasses.field(default_factory=lambda: _now())

    def touched(self) -> None:
        self.revision = str(uuid.uuid4())
        self.last_modified = _now()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _image_config(config: Any) -> dict[str, Any]:
    """Lambda's ImageConfig overrides (Command, EntryPoint, WorkingDirectory) as spec fields."""
    if config is None:
        return {}
    if not isinstance(config, Mapping) or set(config) - {"Command", "EntryPoint",
                                                          "WorkingDirectory"}:
        raise InvalidParameterValue("ImageConfig takes Command, EntryPoint and WorkingDirectory")
    fields: dict[str, Any] = {}
    for key, field_name in (("Command", "command"), ("EntryPoint", "entrypoint")):
        if key in config:
            value = config[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidParameterValue(f"ImageConfig.{key} must be a list of strings")
            fields[field_name] = tuple(value)
    if "WorkingDirectory" in config:
        fields["working_directory"] = str(config["WorkingDirectory"])
    return fields


def _resolve_image(uri: str) -> str:
    """The image to run for *uri*: an image in this host's container storage as it is named,
    or the image ID of an OCI archive (``oci-archive:/path``), imported; InvalidParameterValue
    when there is none."""
    from lambda_service.image import OCI_ARCHIVE, ImageConfig, ImageRunError, import_archive

    try:
        image = import_archive(uri) if uri.startswith(OCI_ARCHIVE) else uri
        ImageConfig.read(image)
    except ImageRunError as exc:
        raise InvalidParameterValue(f"Source image {uri} does not exist. Provide a valid "
                                    f"source image. ({exc})") from exc
    return image


class FunctionsAPI:
    """The function-management routes of one service."""

    def __init__(self, service: LambdaService, *, state_dir: Path | None = None,
                 default_concurrency: int | None = None) -> None:
        self.service = service
        self.default_concurrency = default_concurrency or os.cpu_count() or 1
        self._state_file = state_dir / "functions.json" if state_dir is not None else None
        self._code_root = state_dir / "code" if state_dir is not None else None
        self._own_code_root: tempfile.TemporaryDirectory[str] | None = None
        self.records = {name: FunctionRecord(runtime="python3.11")
                        for name in list(service.pools)}
        #: the spec file's functions: every other one was made by this API (and is kept)
        self._from_spec = frozenset(f.name for f in service.spec.functions)

    def restore(self) -> list[str]:
        """Serve again the functions a previous process made (its state file); code no longer
        on disk, or an entry that no longer parses, is logged and left out. Returns their
        names."""
        if self._state_file is None or not self._state_file.exists():
            return []
        try:
            saved = json.loads(self._state_file.read_text(encoding="utf-8"))["functions"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("functions_state_unreadable", path=str(self._state_file), error=str(exc))
            return []
        restored = []
        for entry in saved:
            try:
                function = FunctionSpec(**entry["function"])
                record = FunctionRecord(**entry["record"])
            except (KeyError, TypeError, SpecError) as exc:
                log.error("function_not_restored", entry=str(entry)[:200], error=str(exc))
                continue
            if function.code_path and not Path(function.code_path).is_dir():
                log.error("function_not_restored", function=function.name,
                          error=f"its code is gone ({function.code_path})")
                continue
            if function.name in self.service.pools:
                log.error("function_not_restored", function=function.name,
                          error="the spec file serves a function of that name")
                continue
            self.service.add_function(function)
            self.records[function.name] = record
            restored.append(function.name)
        self._remove_unused_code()
        if restored:
            log.info("functions_restored", functions=restored, path=str(self._state_file))
        return restored

    def stop(self) -> None:
        if self._own_code_root is not None:
            self._own_code_root.cleanup()

    # -- routing -----------------------------------------------------------------------------
    def route(self, method: str, path: str, body: dict[str, Any]) -> Answer | None:
        if path == FUNCTIONS_PATH:
            if method == "POST":
                return 201, self.create(body)
            if method == "GET":
                return 200, {"Functions": [self.configuration(n) for n in list(self.service.pools)]}
            return None
        for prefix in (CONCURRENCY_PUT_PREFIX, CONCURRENCY_GET_PREFIX):
            if path.startswith(prefix) and path.endswith("/concurrency"):
                name = urllib.parse.unquote(path[len(prefix):-len("/concurrency")])
                if method == "PUT" and prefix == CONCURRENCY_PUT_PREFIX:
                    return 200, self.put_concurrency(name, body)
                if method == "DELETE" and prefix == CONCURRENCY_PUT_PREFIX:
                    self.delete_concurrency(name)
                    return 204, None
                if method == "GET" and prefix == CONCURRENCY_GET_PREFIX:
                    return 200, self.get_concurrency(name)
                return None
        if not path.startswith(FUNCTIONS_PATH + "/"):
            return None
        parts = [urllib.parse.unquote(p) for p in path[len(FUNCTIONS_PATH) + 1:].split("/")]
        if len(parts) == 1:
            if method == "GET":
                return 200, self.get(parts[0])
            if method == "DELETE":
                self.delete(parts[0])
                return 204, None
        elif len(parts) == 2 and method == "PUT" and parts[1] == "configuration":
            return 200, self.update_configuration(parts[0], body)
        elif len(parts) == 2 and method == "PUT" and parts[1] == "code":
            return 200, self.update_code(parts[0], body)
        elif len(parts) == 2 and method == "GET" and parts[1] == "configuration":
            return 200, self.configuration(self._name(parts[0]))
        return None

    # -- the calls ---------------------------------------------------------------------------
    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body.get("FunctionName")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidParameterValue(
                f"1 validation error detected: Value '{name}' at 'functionName' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern: "
                "[a-zA-Z0-9-_]{1,64}")
        if name in self.service.pools:
            raise ResourceConflict(f"Function already exist: {name}")
        package = body.get("PackageType", "Zip")
        code = body.get("Code")
        if not isinstance(code, Mapping):
            raise InvalidParameterValue("Code is required")
        record = FunctionRecord(role=str(body.get("Role", "")),
                                description=str(body.get("Description", "")))
        if "ImageConfig" in body:
            code = {**code, "ImageConfig": body["ImageConfig"]}
        fields = self._code(name, package, code, body.get("Handler"), body.get("Runtime"),
                            record)
        fields |= self._settings(body, defaults={"timeout_s": 3.0, "memory_mb": 128,
                                                 "environment": {}})
        function = self._spec(name=name, concurrency=self.default_concurrency, **fields)
        self.service.add_function(function)
        self.records[name] = record
        self._save()
        log.info("function_created", function=name, package=package,
                 concurrency=function.concurrency)
        return self.configuration(name)

    def get(self, name: str) -> dict[str, Any]:
        name = self._name(name)
        function = self.service.pools[name].function
        record = self.records[name]
        code = ({"RepositoryType": "ECR", "ImageUri": record.image_uri or function.image,
                 "ResolvedImageUri": function.image} if function.image else
                {"RepositoryType": "S3", "Location": ""})
        answer: dict[str, Any] = {"Configuration": self.configuration(name), "Code": code}
        if record.reserved is not None:
            answer["Concurrency"] = {"ReservedConcurrentExecutions": record.reserved}
        return answer

    def update_configuration(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = self._name(name)
        self._check_revision(name, body)
        function = self.service.pools[name].function
        record = self.records[name]
        changes = self._settings(body, defaults={})
        if "Handler" in body:
            if function.image:
                raise InvalidParameterValue("Handler is not supported for functions of "
                                            "package type Image")
            changes["handler"] = str(body["Handler"])
        if "Description" in body:
            record.description = str(body["Description"])
        if "Role" in body:
            record.role = str(body["Role"])
        self._replace(function, changes)
        record.touched()
        self._save()
        return self.configuration(name)

    def update_code(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = self._name(name)
        self._check_revision(name, body)
        function = self.service.pools[name].function
        record = self.records[name]
        package = "Image" if function.image else "Zip"
        if package == "Image" and "ZipFile" in body or package == "Zip" and "ImageUri" in body:
            raise InvalidParameterValue(f"Please provide code of the function's package type "
                                        f"({package})")
        changes = self._code(name, package, body, function.handler or None, record.runtime,
                             record)
        if body.get("DryRun"):
            return self.configuration(name)
        self._replace(function, changes)
        record.touched()
        self._save()
        return self.configuration(name)

    def delete(self, name: str) -> None:
        name = self._name(name)
        function = self.service.remove_function(name)
        self.records.pop(name, None)
        self._save()
        log.info("function_deleted", function=name)
        if function.code_path and self._code_root is not None and \
                Path(function.code_path).is_relative_to(self._code_root):
            shutil.rmtree(Path(function.code_path).parent, ignore_errors=True)

    def put_concurrency(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = self._name(name)
        reserved = body.get("ReservedConcurrentExecutions")
        if isinstance(reserved, bool) or not isinstance(reserved, int) or reserved < 0:
            raise InvalidParameterValue("ReservedConcurrentExecutions must be an integer >= 0")
        if reserved == 0:
            raise InvalidParameterValue("ReservedConcurrentExecutions 0 (throttle every "
                                        "invocation) is not supported by this service: "
                                        "DeleteFunction to stop the function")
        self._replace(self.service.pools[name].function, {"concurrency": reserved})
        self.records[name].reserved = reserved
        self._save()
        return {"ReservedConcurrentExecutions": reserved}

    def get_concurrency(self, name: str) -> dict[str, Any]:
        reserved = self.records[self._name(name)].reserved
        return {} if reserved is None else {"ReservedConcurrentExecutions": reserved}

    def delete_concurrency(self, name: str) -> None:
        name = self._name(name)
        if self.records[name].reserved is not None:
            self._replace(self.service.pools[name].function,
                          {"concurrency": self.default_concurrency})
            self.records[name].reserved = None
            self._save()

    # -- what Lambda answers -----------------------------------------------------------------
    def configuration(self, name: str) -> dict[str, Any]:
        """The FunctionConfiguration, as Lambda shapes it."""
        pool = self.service.pools[name]
        function = pool.function
        record = self.records.setdefault(name, FunctionRecord())
        warm = pool.stats()["starting"] == 0
        config: dict[str, Any] = {
            "FunctionName": name, "FunctionArn": self.service.spec.function_arn(name),
            "Role": record.role, "Description": record.description,
            "Timeout": round(function.timeout_s), "MemorySize": function.memory_mb,
            "Environment": {"Variables": dict(function.environment)},
            "Version": "$LATEST", "LastModified": record.last_modified,
            "RevisionId": record.revision, "CodeSha256": record.code_sha256,
            "CodeSize": record.code_size, "Architectures": ["x86_64"],
            "State": "Active" if warm else "Pending",
            "LastUpdateStatus": "Successful" if warm else "InProgress"}
        if function.image:
            config |= {"PackageType": "Image",
                       "ImageConfigResponse": {"ImageConfig": function.image_config()}}
        else:
            config |= {"PackageType": "Zip", "Handler": function.handler,
                       "Runtime": record.runtime or "python3.11"}
        return config

    # -- internals ---------------------------------------------------------------------------
    def _save(self) -> None:
        """The made functions, as they are now, to the state file (write, fsync, rename: a
        crash leaves the old file or the new one, never half of one)."""
        if self._state_file is None:
            return
        entries = [{"function": self.service.pools[name].function.to_json(),
                    "record": dataclasses.asdict(self.records[name])}
                   for name in sorted(self.service.pools) if name not in self._from_spec]
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self._state_file.with_suffix(".json.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"functions": entries}, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self._state_file)

    def _remove_unused_code(self) -> None:
        """Code directories no function points at (left by UpdateFunctionCode, whose old
        version ran until its environments were done, or by a crash mid-CreateFunction)."""
        if self._code_root is None or not self._code_root.is_dir():
            return
        used = {Path(pool.function.code_path).parent for pool in self.service.pools.values()
                if pool.function.code_path}
        for directory in self._code_root.iterdir():
            if directory.is_dir() and directory not in used:
                shutil.rmtree(directory, ignore_errors=True)

    def _name(self, function: str) -> str:
        """A name or ARN as `resolve` reads it; ResourceNotFound when there is none."""
        return self.service.resolve(function, None).function.name

    def _check_revision(self, name: str, body: Mapping[str, Any]) -> None:
        revision = body.get("RevisionId")
        if revision and revision != self.records[name].revision:
            raise PreconditionFailed("The Revision Id provided does not match the latest "
                                     "Revision Id. Call the GetFunction/GetAlias API to "
                                     "retrieve the latest Revision Id")

    def _replace(self, function: FunctionSpec, changes: Mapping[str, Any]) -> None:
        try:
            updated = dataclasses.replace(function, **changes)
        except (SpecError, TypeError) as exc:
            raise InvalidParameterValue(str(exc)) from exc
        self.service.replace_function(updated)

    @staticmethod
    def _spec(**fields: Any) -> FunctionSpec:
        try:
            return FunctionSpec(**fields)
        except (SpecError, TypeError) as exc:
            raise InvalidParameterValue(str(exc)) from exc

    @staticmethod
    def _settings(body: Mapping[str, Any], *, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """Timeout, MemorySize, Environment from a request (Lambda's limits)."""
        fields = dict(defaults)
        if "Timeout" in body:
            timeout = body["Timeout"]
            if isinstance(timeout, bool) or not isinstance(timeout, int) \
                    or not 1 <= timeout <= 900:
                raise InvalidParameterValue(f"Timeout must be 1..900 seconds, not {timeout!r}")
            fields["timeout_s"] = float(timeout)
        if "MemorySize" in body:
            memory = body["MemorySize"]
            if isinstance(memory, bool) or not isinstance(memory, int) \
                    or not 128 <= memory <= 10240:
                raise InvalidParameterValue(f"MemorySize must be 128..10240 MB, not {memory!r}")
            fields["memory_mb"] = memory
        if "Environment" in body:
            variables = (body["Environment"] or {}).get("Variables", {})
            if not isinstance(variables, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in variables.items()):
                raise InvalidParameterValue("Environment.Variables must map strings to strings")
            bad = [k for k in variables if not re.fullmatch(r"[a-zA-Z]\w*", k)
                   or k in _RESERVED_VARIABLES or k.startswith("AWS_LAMBDA_")]
            if bad:
                raise InvalidParameterValue(f"Lambda was unable to configure your environment "
                                            f"variables because the environment variables you "
                                            f"have provided contains reserved keys that are "
                                            f"currently not supported for modification. "
                                            f"Reserved keys used in this request: "
                                            f"{', '.join(bad)}")
            fields["environment"] = dict(variables)
        return fields

    def _code(self, name: str, package: str, code: Mapping[str, Any], handler: Any,
              runtime: Any, record: FunctionRecord) -> dict[str, Any]:
        """How to run *code* (a CreateFunction's Code, an UpdateFunctionCode body)."""
        if package == "Image":
            uri = code.get("ImageUri")
            if not isinstance(uri, str) or not uri:
                raise InvalidParameterValue("Code.ImageUri is required for package type Image")
            if "ZipFile" in code or handler:
                raise InvalidParameterValue("Please don't provide Handler or ZipFile for "
                                            "package type Image")
            image = _resolve_image(uri)
            record.image_uri = uri
            record.code_sha256 = hashlib.sha256(image.encode()).hexdigest()
            return {"image": image, "handler": "", **_image_config(code.get("ImageConfig"))}
        if package != "Zip":
            raise InvalidParameterValue(f"PackageType must be Zip or Image, not {package!r}")
        if any(k in code for k in ("S3Bucket", "S3Key", "S3ObjectVersion")):
            raise InvalidParameterValue("Code from S3 is not supported by this service: "
                                        "upload the archive as ZipFile")
        if not isinstance(handler, str) or not handler:
            raise InvalidParameterValue("Handler is required for package type Zip")
        if not isinstance(runtime, str) or not _PYTHON.match(runtime):
            raise InvalidParameterValue(f"Runtime {runtime!r} is not supported: this service "
                                        "runs python3.x handlers")
        raw = code.get("ZipFile")
        try:
            archive = base64.b64decode(raw, validate=True) if isinstance(raw, str) else b""
        except (binascii.Error, ValueError):
            archive = b""
        if not archive:
            raise InvalidParameterValue("Code.ZipFile is required for package type Zip")
        if len(archive) > MAX_ZIP_BYTES:
            raise InvalidParameterValue(f"Code.ZipFile is {len(archive)} bytes; a ZipFile "
                                        f"upload must be at most {MAX_ZIP_BYTES} bytes")
        code_path = self._unzip(name, archive)
        record.runtime = runtime
        record.code_sha256 = base64.b64encode(hashlib.sha256(archive).digest()).decode()
        record.code_size = len(archive)
        return {"handler": handler, "code_path": str(code_path), "image": ""}

    def _unzip(self, name: str, archive: bytes) -> Path:
        """The archive in a directory of its own; members that would land outside it, or a
        total over Lambda's unzipped limit, are refused."""
        if self._code_root is None:
            self._own_code_root = tempfile.TemporaryDirectory(prefix="lambda-code-")
            self._code_root = Path(self._own_code_root.name)
        self._code_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
                members = zipped.infolist()
                if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
                    raise InvalidParameterValue("Unzipped size must be smaller than "
                                                f"{MAX_UNZIPPED_BYTES} bytes")
                for member in members:
                    parts = Path(member.filename).parts
                    if member.filename.startswith("/") or ".." in parts:
                        raise InvalidParameterValue(f"Could not unzip uploaded file: member "
                                                    f"{member.filename!r} leaves its directory")
                target = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._code_root)) / "code"
                zipped.extractall(target)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InvalidParameterValue("Could not unzip uploaded file. Please check your "
                                        "file, then try to upload again.") from exc
        return target
