"""`LocalCloud`: the whole embedded cloud on 127.0.0.1 (moto for S3/SQS/DynamoDB, our Lambda
endpoint for the function), provisioned by the same definition that provisions AWS.

`daemon_settings()` describes it in the daemon's settings (docs/contracts.md): they name the
endpoints (`endpoint_url`, `lambda_endpoint_url`), so a daemon given them reaches this cloud and
nothing else whatever the shell exports; other clients (the CLI's `aws`, tests) use boto3's
endpoint variables from `client_env()`; the function reaches moto the same way, through its
environment. `openstack_handler.demos` writes those settings as the daemon's config file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3
import structlog

from lambda_service.endpoint import LambdaEndpoint
from lambda_service.faults import FAULTS_ENV, FaultSpec
from lambda_service.net import free_port
from lambda_service.spec import EndpointSpec, FunctionSpec, split_handler
from localcloud.moto_server import MotoServer
from localcloud.onnx_export import exported_models
from openstack_handler.provisioning.aws import (
    function_environment,
    load_student_records,
    provision,
    seed_students,
)
from openstack_handler.provisioning.camera import (
    ProvisionedCamera,
    camera_environment,
    provision_camera,
)
from openstack_handler.provisioning.serverless import provision_trigger
from openstack_handler.provisioning.spec import Change, Provisioned, ResourceSpec

log = structlog.get_logger()

DEFAULT_HANDLER = "lambda_image.handlers:s3_handler"
REGION = "us-east-1"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# The checkout that holds localcloud/ also holds lambda_image/: let workers import from it even
# when the package was installed in a way that does not expose lambda_image.
SOURCE_ROOT = Path(__file__).resolve().parents[1]
#: Where an image function finds its gallery (the README's `COPY encoding /opt/gallery/`).
IMAGE_GALLERY = "/opt/gallery/encoding"
#: The workers' inference runtimes: what the image ships, and the torch reference.
RUNTIMES = ("onnx", "torch")


class EndpointSession:
    """A boto3 Session whose clients all talk to one endpoint (without touching os.environ),
    except the services *overrides* sends elsewhere (e.g. lambda to the Lambda endpoint)."""

    def __init__(self, endpoint_url: str, region: str = REGION,
                 overrides: Mapping[str, str] | None = None) -> None:
        self.endpoint_url = endpoint_url
        self.overrides = dict(overrides or {})
        self._session = boto3.session.Session(
            region_name=region, aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def _url(self, service_name: str) -> str:
        return self.overrides.get(service_name, self.endpoint_url)

    def client(self, service_name: str, **kwargs: Any) -> Any:
        return self._session.client(service_name, endpoint_url=self._url(service_name),
                                    **kwargs)

    def resource(self, service_name: str, **kwargs: Any) -> Any:
        return self._session.resource(service_name, endpoint_url=self._url(service_name),
                                      **kwargs)


class LocalCloud:
    """Start, provision and seed everything; `stop()` (or leaving the `with`) tears it down.

    Function timeout and memory come from *resources* (one source of truth with provisioning);
    *concurrency* is the number of warm workers of the video function (the machine's cores is
    a sensible maximum). With *camera*, the camera path's three functions run too
    (*camera_concurrency* workers each), with their URLs and the request queue's trigger
    provisioned through the Lambda endpoint's API; *video* False leaves the video function out.
    The URLs' auth type is *resources*' `url_auth_type`; the default here is NONE (the cloud
    listens on 127.0.0.1 only), so clients written for the course call them unsigned.

    *resources*' `mode` decides what the input bucket notifies: the input queue (daemon, the
    default) or the video function itself (serverless: moto's S3 invokes the Lambda service
    asynchronously, see :mod:`localcloud.s3_lambda_delivery`); *async_time_scale* scales Lambda's
    retry delays and event ages for tests (:mod:`lambda_service.async_invoke`).

    With *image* (a built function image, e.g. ``localhost/face-recognition:<tag>``) the functions
    (the camera path's too, CMD picking each entry point) run as Lambda runs container images (:mod:`lambda_service.environment`): the gallery
    is put into the image as a user's ``COPY`` would (one layer more, cached), and *handler* is
    the CMD. Without it, *handler* runs in warm worker processes: faster, the suite's default.
    Those run the *runtime* we ship, ``onnx`` (onnxruntime on the models the image carries,
    exported once and cached, :mod:`localcloud.onnx_export`; torch is never imported), or
    ``torch`` (the reference the parity tests compare with).
    """

    def __init__(self, *, gallery: Path, students: Path | None = None,
                 resources: ResourceSpec | None = None, handler: str = DEFAULT_HANDLER,
                 concurrency: int = 2, extra_environment: Mapping[str, str] | None = None,
                 work_dir: Path | None = None, host: str = "127.0.0.1",
                 pythonpath: Sequence[Path] = (), start_timeout_s: float = 180.0,
                 faults: FaultSpec | None = None, camera: bool = False,
                 camera_concurrency: int = 1, video: bool = True,
                 camera_handler: str | None = None,
                 event_source_poll_wait_s: int = 5, image: str | None = None,
                 runtime: str = "onnx", async_time_scale: float = 1.0) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
        self.gallery = gallery
        self.students = students
        self.resources = resources or ResourceSpec(prefix="local", url_auth_type="NONE")
        self.camera_enabled = camera
        self.camera_concurrency = camera_concurrency
        self.camera_handler = camera_handler  # tests: one stand-in handler for all three
        self.video_enabled = video
        self.event_source_poll_wait_s = event_source_poll_wait_s
        self._camera: ProvisionedCamera | None = None
        self.handler = handler
        self.concurrency = concurrency
        self.extra_environment = dict(extra_environment or {})
        self.host = host
        self.pythonpath = (*pythonpath, SOURCE_ROOT)
        self.start_timeout_s = start_timeout_s
        self.faults = faults
        self.image = image
        self.runtime = runtime
        self._model_dir: Path | None = None
        self.async_time_scale = async_time_scale  # tests: Lambda's retry minutes, scaled
        self.trigger_changes: tuple[Change, ...] = ()
        self._function_image: str | None = None
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir
        self.moto: MotoServer | None = None
        self.endpoint: LambdaEndpoint | None = None
        self._provisioned: Provisioned | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        if not self.gallery.is_file():
            raise FileNotFoundError(f"gallery file not found: {self.gallery}")
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="localcloud-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        assert self.work_dir is not None
        # the Lambda service's port first: moto's S3 invokes it for LambdaFunctionConfigurations
        lambda_port = moto_port = free_port(self.host)
        while moto_port == lambda_port:  # both are free now: they must not be the same one
            moto_port = free_port(self.host)
        self.moto = MotoServer(host=self.host, port=moto_port, log_path=self.work_dir / "moto.log",
                               lambda_url=f"http://{self.host}:{lambda_port}").start()
        session = EndpointSession(self.moto.url)
        self._provisioned = provision(session, self.resources)
        if self.students is not None:
            seed_students(session, self._provisioned.students_table,
                          load_student_records(self.students))
        if self.image is None and self.runtime == "onnx":
            self._model_dir = exported_models()
        if self.image is not None:
            from lambda_service.image import with_files

            self._function_image = with_files(self.image, {IMAGE_GALLERY: self.gallery})
        functions = ((self.function_spec(),) if self.video_enabled else ()) + (
            self.camera_function_specs() if self.camera_enabled else ())
        if not functions:
            raise ValueError("LocalCloud needs the video function, the camera path or both")
        # The service starts with no function: they are made with CreateFunction, as an operator
        # makes them on AWS or on the private service, and kept in its state directory, so a
        # restarted service serves them again. The faults are the service's override (they
        # apply to every function, and again after a restart).
        env = _without_aws_variables(os.environ)
        if self.faults is not None:
            env[FAULTS_ENV] = json.dumps(self.faults.to_json())
        self.endpoint = LambdaEndpoint(
            EndpointSpec(functions=(), region=REGION, state_dir=str(self.work_dir / "lambda"),
                         account_id=self._provisioned.account_id,
                         aws_endpoint_url=self.moto.url,
                         credentials={DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"]:
                                      DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]},
                         event_source_poll_wait_s=self.event_source_poll_wait_s,
                         async_time_scale=self.async_time_scale),
            host=self.host, port=lambda_port, log_path=self.work_dir / "lambda.log",
            pythonpath=self.pythonpath, env=env)
        self.endpoint.start(timeout_s=self.start_timeout_s)
        create_functions(self.session().client("lambda"), functions,
                         timeout_s=self.start_timeout_s)
        # the input bucket's trigger in serverless mode (daemon mode: provision() made it)
        self.trigger_changes = provision_trigger(self.session(), self.resources,
                                                 self.provisioned)
        if self.camera_enabled:
            self._camera = self.provision_camera()
        log.info("local_cloud_up", moto=self.moto.url, lambda_url=self.endpoint.url,
                 work_dir=str(self.work_dir),
                 camera=self._camera.to_json() if self._camera else None)

    def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
        if self.moto is not None:
            self.moto.stop()
            self.moto = None
        if self._own_work_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None

    def is_running(self) -> bool:
        return bool(self.moto and self.moto.is_running()
                    and self.endpoint and self.endpoint.is_running())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what callers need -------------------------------------------------------------------
    @property
    def provisioned(self) -> Provisioned:
        if self._provisioned is None:
            raise RuntimeError("LocalCloud is not started")
        return self._provisioned

    @property
    def moto_url(self) -> str:
        if self.moto is None:
            raise RuntimeError("LocalCloud is not started")
        return self.moto.url

    @property
    def lambda_url(self) -> str:
        if self.endpoint is None:
            raise RuntimeError("LocalCloud is not started")
        return self.endpoint.url

    def session(self) -> EndpointSession:
        """Clients of this cloud: moto for S3/SQS/DynamoDB, the Lambda endpoint for lambda."""
        overrides = {"lambda": self.lambda_url} if self.endpoint is not None else {}
        return EndpointSession(self.moto_url, overrides=overrides)

    def provision_camera(self) -> ProvisionedCamera:
        """The camera path's URLs, permission and trigger, with the same boto3 calls as on AWS
        (idempotent: what exists is left as it is)."""
        return provision_camera(self.session(), self.resources, self.provisioned)

    @property
    def camera(self) -> ProvisionedCamera:
        if self._camera is None:
            raise RuntimeError("LocalCloud was not started with camera=True")
        return self._camera

    def camera_function_specs(self) -> tuple[FunctionSpec, ...]:
        """The camera path's three functions: entry points of the one image (with *image*, run
        from it, CMD picking the entry point), else in warm worker processes."""
        extra = {"AWS_ENDPOINT_URL": self.moto_url, **DUMMY_CREDENTIALS,
                 **self._runtime_environment(), **self.extra_environment}
        gallery = IMAGE_GALLERY if self.image is not None else str(self.gallery.resolve())
        specs = []
        for name, entry in self.resources.camera_functions().items():
            handler = self.camera_handler or entry
            code: dict[str, Any] = {"handler": handler}
            if self.image is not None:
                assert self._function_image is not None, "start() puts the gallery into the image"
                code = {"image": self._function_image, "command": (lambda_handler(handler),)}
            specs.append(FunctionSpec(
                name=name, **code, timeout_s=self.resources.camera_function_timeout_s,
                memory_mb=self.resources.camera_function_memory_mb,
                concurrency=self.camera_concurrency,
                environment=camera_environment(self.resources, self.provisioned, name, gallery,
                                               extra),
                faults=self.faults))
        return tuple(specs)

    def function_spec(self) -> FunctionSpec:
        """The function as the endpoint runs it: contract environment + the way to reach moto."""
        gallery = IMAGE_GALLERY if self.image is not None else str(self.gallery.resolve())
        environment = function_environment(
            self.resources, self.provisioned, gallery,
            {"AWS_ENDPOINT_URL": self.moto_url, **DUMMY_CREDENTIALS,
             **self._runtime_environment(), **self.extra_environment})
        code: dict[str, Any] = {"handler": self.handler}
        if self.image is not None:
            assert self._function_image is not None, "start() puts the gallery into the image"
            code = {"image": self._function_image, "command": (lambda_handler(self.handler),)}
        return FunctionSpec(name=self.resources.function_name, **code,
                            timeout_s=self.resources.function_timeout_s,
                            memory_mb=self.resources.function_memory_mb,
                            concurrency=self.concurrency, environment=environment,
                            faults=self.faults)

    def _runtime_environment(self) -> dict[str, str]:
        """The workers' inference runtime (an image's own ENV names it: nothing to add)."""
        if self.image is not None:
            return {}
        if self._model_dir is None:
            return {"INFERENCE_RUNTIME": "torch"} if self.runtime == "torch" else {}
        return {"INFERENCE_RUNTIME": "onnx", "MODEL_DIR": str(self._model_dir)}

    def private_service(self, *, concurrency: int, log_path: Path | None = None,
                        credentials: Mapping[str, str] | None = None) -> LambdaEndpoint:
        """A second Lambda service serving this cloud's video function with *concurrency*
        slots, on a port of its own (not started): the private cloud's function service beside
        the cloud's own Lambda, which then stands for AWS's. With *credentials* (access key →
        secret) it verifies every call's SigV4 signature against them, as the private service
        does. The caller starts and stops it."""
        if self.endpoint is None or self.work_dir is None:
            raise RuntimeError("LocalCloud is not started")
        spec = self.endpoint.spec
        if credentials:
            spec = dataclasses.replace(spec, credentials=dict(credentials), authenticate=True)
        video = dataclasses.replace(self.function_spec(), concurrency=concurrency)
        return LambdaEndpoint(dataclasses.replace(spec, functions=(video,)), host=self.host,
                              log_path=log_path or self.work_dir / "private-lambda.log",
                              pythonpath=self.pythonpath, env=_without_aws_variables(os.environ))

    def set_faults(self, faults: FaultSpec | Mapping[str, Any] | None,
                   function: str | None = None) -> dict[str, Any]:
        """Change a running function's injected faults (None: none), e.g. to fix a cause;
        default the video function."""
        if self.endpoint is None:
            raise RuntimeError("LocalCloud is not started")
        return self.endpoint.set_faults(faults, function or self.resources.function_name)

    def function_stats(self, function: str | None = None) -> dict[str, Any]:
        """A function's /health counters (default: the video function's): invocations (handler
        runs), injected_*, throttles."""
        if self.endpoint is None:
            raise RuntimeError("LocalCloud is not started")
        return dict(self.endpoint.health()["functions"][function or self.resources.function_name])

    def client_env(self) -> dict[str, str]:
        """Environment for any boto3 client of this cloud (the daemon, the CLI, tests)."""
        return {"AWS_ENDPOINT_URL": self.moto_url, "AWS_ENDPOINT_URL_LAMBDA": self.lambda_url,
                **DUMMY_CREDENTIALS, "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}

    def daemon_settings(self, results_dir: Path, state_dir: Path,
                        concurrency: int = 4) -> dict[str, Any]:
        """The daemon's flat settings (docs/contracts.md, "Daemon settings") for this cloud."""
        p = self.provisioned
        return {"input_queue_url": p.input_queue_url, "output_queue_url": p.output_queue_url,
                "function_name": self.resources.function_name,
                "results_dir": str(results_dir.resolve()), "state_dir": str(state_dir.resolve()),
                "region": p.region, "concurrency": concurrency,
                "function_timeout_s": self.resources.function_timeout_s,
                "input_dlq_url": p.input_dlq_url, "output_dlq_url": p.output_dlq_url,
                "request_queue_url": p.request_queue_url, "request_dlq_url": p.request_dlq_url,
                "failure_queue_url": p.failure_queue_url,
                # The endpoints themselves: the file alone decides where the daemon goes.
                "endpoint_url": self.moto_url, "lambda_endpoint_url": self.lambda_url}

def lambda_handler(handler: str) -> str:
    """`pkg.mod:func` as Lambda (awslambdaric, an image's CMD) spells it: `pkg.mod.func`."""
    module, func = split_handler(handler)
    return f"{module}.{func}"


def _without_aws_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The endpoint's environment without the caller's AWS settings (profiles, endpoints...):
    the function gets exactly what `function_spec()` gives it."""
    return {k: v for k, v in env.items() if not k.startswith("AWS_")}


def create_functions(lam: Any, functions: Sequence[FunctionSpec], *,
                     timeout_s: float = 180.0) -> None:
    """Make *functions* on the Lambda service *lam* talks to with the calls used on AWS:
    ``CreateFunction`` (an image's ``ImageUri`` and ``ImageConfig``; a handler as a zip of
    ``lambda_image``, the deployment package, which the workers' path completes) and
    ``PutFunctionConcurrency`` (their slots); then wait until every one is Active (warm)."""
    from openstack_handler.provisioning.private import function_zip

    archive: bytes | None = None
    for function in functions:
        if function.image:
            image_config = function.image_config()
            code: dict[str, Any] = {"PackageType": "Image",
                                    "Code": {"ImageUri": function.image},
                                    **({"ImageConfig": image_config} if image_config else {})}
        else:
            archive = archive if archive is not None else function_zip(None)
            module, func = split_handler(function.handler)
            code = {"PackageType": "Zip", "Runtime": "python3.11", "Handler": f"{module}.{func}",
                    "Code": {"ZipFile": archive}}
        lam.create_function(FunctionName=function.name, Role="arn:aws:iam::000000000000:role/local",
                            Timeout=max(1, round(function.timeout_s)),
                            MemorySize=function.memory_mb,
                            Environment={"Variables": dict(function.environment)}, **code)
        lam.put_function_concurrency(FunctionName=function.name,
                                     ReservedConcurrentExecutions=function.concurrency)
    for function in functions:
        lam.get_waiter("function_active_v2").wait(
            FunctionName=function.name,
            WaiterConfig={"Delay": 0.2, "MaxAttempts": max(1, int(timeout_s / 0.2))})

