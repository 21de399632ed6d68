"""The commands that manage a cloud rather than run the daemon: `local up`, `local demo` and
`aws provision`. Everything heavy is imported inside the command, so `import openstack_handler.cli`
stays light (no moto, no torch)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openstack_handler.provisioning.spec import Change, Provisioned, ResourceSpec

from openstack_handler.daemon.exit_codes import ExitCode

DEFAULT_DEMO_CONCURRENCY = max(1, min(2, os.cpu_count() or 1))


def add_local_commands(subparsers: argparse._SubParsersAction) -> None:
    local = subparsers.add_parser("local", help="the embedded local cloud (moto + Lambda endpoint)")
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")

    up = local_sub.add_parser(
        "up", help="run the local cloud in the foreground until Ctrl-C",
        description="Start moto (S3, SQS, DynamoDB) and the Lambda endpoint on 127.0.0.1, "
                    "provision the buckets, queues, table and function, seed the students, and "
                    "write a daemon config that names these endpoints; run until Ctrl-C.",
        epilog="exit status: 0 stopped by Ctrl-C/SIGTERM; 1 could not start, or a server died")
    _add_function_inputs(up)
    up.add_argument("--config-out", type=Path, metavar="FILE",
                    help="write the daemon config here (default: daemon.toml in the cloud's "
                         "work dir)")
    _add_keep_work_dir(up)
    up.add_argument("--results", type=Path, default=Path("results"), metavar="DIR",
                    help="results dir written into the daemon config (default: %(default)s, "
                         "relative to the current directory)")
    up.add_argument("--no-camera", dest="camera", action="store_false",
                    help="leave out the camera path (its three functions, URLs and trigger; by default "
                         "local up provisions it beside the video path)")
    up.add_argument("--camera-concurrency", type=int, default=1, metavar="N",
                    help="warm workers per camera function (default: %(default)s)")
    up.add_argument("--url-auth-type", choices=("NONE", "AWS_IAM"), default="NONE",
                    help="the camera URLs' auth type (default: %(default)s: the local cloud "
                         "listens on 127.0.0.1 only, and the course's clients do not sign)")
    up.add_argument("--mode", choices=("daemon", "serverless"), default="daemon",
                    help="what the input bucket notifies: the input queue, for the daemon "
                         "(default), or the function itself (serverless: no daemon needed)")
    up.set_defaults(func=_cmd_local_up)

    demo = local_sub.add_parser(
        "demo", help="upload a folder of videos through the whole pipeline and print a table",
        description="Start the local cloud and the real daemon, upload every file of --videos, "
                    "wait for each one's result and print a table (with --expected, whether "
                    "each is right).",
        epilog="exit status: 0 every video has a (right) result; 1 otherwise")
    _add_function_inputs(demo)
    _add_keep_work_dir(demo)
    demo.add_argument("--videos", type=Path, required=True, metavar="DIR",
                      help="folder whose files are uploaded, one video each")
    demo.add_argument("--results", type=Path, default=Path("results"), metavar="DIR",
                      help="where the daemon writes <video>.csv (default: %(default)s)")
    demo.add_argument("--expected", type=Path, metavar="FILE",
                      help="CSV `video,names` to check the results against")
    demo.add_argument("--daemon-concurrency", type=int, default=None,
                      help="in-flight invocations (default: the function's concurrency, so the "
                           "daemon does not provoke throttling)")
    demo.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                      help="give up on results after this long (default: %(default)s)")
    demo.add_argument("--serverless", action="store_true",
                      help="no daemon: the input bucket invokes the function (asynchronously, "
                           "with Lambda's retries); the results are read from the output bucket "
                           "(--results and --daemon-concurrency do not apply)")
    demo.set_defaults(func=_cmd_local_demo)

    camera = local_sub.add_parser(
        "camera-demo", help="send the frames of a folder of videos through the camera path "
                            "(both stages) and print a table",
        description="Start the local cloud with the camera path only, run the camera client "
                    "(python -m camera send) on every file of --videos through the one-stage "
                    "URL and the two-stage URL + response queue, and print a row per frame "
                    "(with --expected, whether each answer is right).",
        epilog="exit status: 0 every frame answered (rightly) by both stages; 1 otherwise")
    _add_function_inputs(camera)
    _add_keep_work_dir(camera)
    camera.add_argument("--videos", type=Path, required=True, metavar="DIR",
                        help="folder of videos, whose every --every-th frame is sent")
    camera.add_argument("--expected", type=Path, metavar="FILE",
                        help="CSV `video,names`: a frame's answer is right when it is one of "
                             "its video's names")
    camera.add_argument("--every", type=int, default=15, metavar="N",
                        help="send every N-th frame (default: %(default)s, as the course's Pi)")
    camera.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="how long to wait for one answer (default: %(default)s)")
    camera.set_defaults(func=_cmd_local_camera_demo)


def _add_keep_work_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-work-dir", action="store_true",
                        help="keep the run's scratch folder (/tmp/...: logs, and the daemon "
                             "config and state unless placed elsewhere) after a clean exit; "
                             "a failed run always keeps it and says where")


def _add_function_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", type=Path, required=True, metavar="FILE",
                        help="gallery file: the course `encoding` pickle or a facenet data.pt")
    parser.add_argument("--students", type=Path, required=True, metavar="FILE",
                        help="student records JSON [{id, name, major, year}] to seed DynamoDB")
    parser.add_argument("--function-concurrency", type=int, default=DEFAULT_DEMO_CONCURRENCY,
                        help="warm function workers (default: the cores, at most 2)")


def _cmd_local_up(args: argparse.Namespace) -> int:
    from openstack_handler.demos.local_up import run_local_up
    from openstack_handler.logs import configure_logging

    configure_logging(None, level="info")

    from openstack_handler.provisioning.spec import ResourceSpec

    return run_local_up(args.config_out, args.gallery, args.students, results_dir=args.results,
                        function_concurrency=args.function_concurrency,
                        daemon_concurrency=args.function_concurrency,
                        keep_work_dir=args.keep_work_dir, camera=args.camera,
                        camera_concurrency=args.camera_concurrency,
                        resources=ResourceSpec(prefix="local", url_auth_type=args.url_auth_type,
                                               mode=args.mode))


def _cmd_local_demo(args: argparse.Namespace) -> int:
    from openstack_handler.demos.video import run_local_demo
    from openstack_handler.logs import configure_logging

    configure_logging(False, level="warning")  # the table is the output; details are in the logs

    if args.serverless:
        from openstack_handler.demos.serverless import run_serverless_demo

        report = run_serverless_demo(videos=args.videos, gallery=args.gallery,
                                     students=args.students, expected=args.expected,
                                     function_concurrency=args.function_concurrency,
                                     timeout_s=args.timeout, keep_work_dir=args.keep_work_dir)
        return int(ExitCode.OK if report.ok else ExitCode.FAILURE)
    report = run_local_demo(videos=args.videos, gallery=args.gallery, students=args.students,
                            results=args.results, expected=args.expected,
                            function_concurrency=args.function_concurrency,
                            daemon_concurrency=args.daemon_concurrency or args.function_concurrency,
                            timeout_s=args.timeout, keep_work_dir=args.keep_work_dir)
    return int(ExitCode.OK if report.ok else ExitCode.FAILURE)


def _cmd_local_camera_demo(args: argparse.Namespace) -> int:
    from openstack_handler.demos.camera import run_camera_demo
    from openstack_handler.logs import configure_logging

    configure_logging(False, level="warning")  # the table is the output; details are in the logs
    report = run_camera_demo(videos=args.videos, gallery=args.gallery, students=args.students,
                             expected=args.expected, every=args.every,
                             concurrency=args.function_concurrency, timeout_s=args.timeout,
                             keep_work_dir=args.keep_work_dir)
    return int(ExitCode.OK if report.ok else ExitCode.FAILURE)


class _DeprecatedConfigOption(argparse.Action):
    """``aws provision --config``: the old name of --config-out (every other --config reads a
    file; this one writes it). Still accepted, with a warning."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print("openstack-handler: --config is deprecated for aws provision (it writes the "
              "file): use --config-out", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_aws_commands(subparsers: argparse._SubParsersAction) -> None:
    aws = subparsers.add_parser("aws", help="provision the AWS side (boto3's credential chain)")
    aws_sub = aws.add_subparsers(dest="aws_command", required=True, metavar="COMMAND")
    prov = aws_sub.add_parser(
        "provision", help="create or converge buckets, queues+DLQs, notification, table, function",
        description="Create or converge every AWS resource from the one declarative definition "
                    "(idempotent: a second run changes nothing) and write the daemon's config.",
        epilog="exit status: 0 ok; 78 the existing config file is not valid TOML")
    # Not required=True: the deprecated --config may give it instead (checked in the command).
    prov.add_argument("--config-out", type=Path, metavar="FILE",
                      help="(required) daemon config to write the queue URLs and function name "
                           "into (other keys in it are kept)")
    prov.add_argument("--config", "-c", type=Path, dest="config_out",
                      action=_DeprecatedConfigOption, help=argparse.SUPPRESS)
    prov.add_argument("--prefix", default="openstack-handler",
                      help="resource name prefix (bucket names must be globally unique; "
                           "default: %(default)s)")
    prov.add_argument("--region", default=None, help="default: boto3's configured region")
    prov.add_argument("--students", type=Path, metavar="FILE", help="seed the table from this JSON")
    prov.add_argument("--function-timeout", type=int, default=60, metavar="SECONDS",
                      help="the function's timeout; the input queue's visibility is 6x it "
                           "(default: %(default)s)")
    prov.add_argument("--image-uri", help="ECR image of lambda_image: also create/update the "
                                          "function and its least-privilege role")
    prov.add_argument("--gallery-in-image", default="/var/task/gallery/encoding",
                      help="GALLERY_PATH inside the image (default: %(default)s)")
    prov.add_argument("--url-auth-type", choices=("AWS_IAM", "NONE"), default="AWS_IAM",
                      help="auth type of the camera path's Function URLs (with --image-uri). "
                           "AWS_IAM (the default): callers sign with SigV4. NONE: the URLs "
                           "are public, anyone who has them can call them")
    prov.add_argument("--mode", choices=("daemon", "serverless"), default="daemon",
                      help="what the input bucket notifies: the input queue, which the daemon "
                           "consumes (default), or the function itself, with no daemon "
                           "(serverless: needs the function, --image-uri or made before); "
                           "switching either way leaves exactly one trigger")
    prov.add_argument("--trigger-prefix", default="", metavar="PREFIX",
                      help="serverless: only keys starting with this invoke the function (default: any key)")
    prov.add_argument("--trigger-suffix", default="", metavar="SUFFIX",
                      help="serverless: only keys ending with this invoke the function (default: any key)")
    prov.add_argument("--max-retry-attempts", type=int, default=2, choices=range(3),
                      metavar="0..2", help="serverless: retries of a failed event (default 2)")
    prov.add_argument("--max-event-age", type=int, default=21600, metavar="SECONDS",
                      help="serverless: an event older than this is not retried (60..21600; default: "
                           "%(default)s, Lambda's)")
    private = prov.add_argument_group(
        "the private function service",
        "Also make the video function on a private function service (our Lambda service on "
        "a VM, docs/deploying.md) with the same Lambda calls, and write the daemon's targets: "
        "it first, AWS's Lambda past its slots (docs/placement.md).")
    private.add_argument("--private-endpoint-url", metavar="URL",
                         help="the service, e.g. http://10.0.0.5:9001")
    private.add_argument("--private-profile", metavar="NAME",
                         help="the profile whose key signs the calls to it, here and in the "
                              "daemon's target (default: boto3's chain)")
    private.add_argument("--private-function-profile", metavar="NAME",
                         help="(required) the profile whose keys the function itself uses for "
                              "S3, SQS and DynamoDB: the service has no execution roles")
    private.add_argument("--private-slots", type=int, default=1, metavar="N",
                         help="its reserved concurrency, and the daemon's slots there "
                              "(default: %(default)s; with replicas, give each its share)")
    private.add_argument("--private-gallery", type=Path, metavar="FILE",
                         help="a zip of this installation's lambda_image and FILE (a VM: the "
                              "ONNX worker mode)")
    private.add_argument("--private-model-dir", default="/opt/handler-functions/models",
                         metavar="DIR", help="the models on the service's host, for the zip "
                                             "(default: %(default)s, where the role puts them)")
    private.add_argument("--private-image-uri", metavar="URI",
                         help="instead of a zip, an image (or oci-archive:PATH) on the "
                              "service's host; GALLERY_PATH is --gallery-in-image")
    private.add_argument("--aws-slots", type=int, metavar="N",
                         help="the daemon's slots on AWS's Lambda (default: the config's "
                              "concurrency, else 32)")
    private.add_argument("--burst-after", type=float, metavar="SECONDS",
                         help="the daemon's burst_after_s: how long a message waits for the "
                              "private slots before AWS takes it (0: at once; default: never)")
    prov.add_argument("--json", action="store_true",
                      help='print {"changed", "changes", "settings", "camera"} (for Ansible) '
                           "instead of lines")
    prov.set_defaults(func=_cmd_aws_provision)


def _cmd_aws_provision(args: argparse.Namespace) -> int:
    import boto3

    from openstack_handler.daemon.settings import load_settings, settings_toml
    from openstack_handler.logs import configure_logging
    from openstack_handler.provisioning.aws import (
        describe_changes,
        load_student_records,
        provision,
        provision_function,
        seed_students,
    )
    from openstack_handler.provisioning.camera import (
        provision_camera,
        provision_camera_functions,
    )
    from openstack_handler.provisioning.serverless import provision_trigger
    from openstack_handler.provisioning.spec import Change, ProvisioningError, ResourceSpec

    if args.config_out is None:
        print("openstack-handler aws provision: error: --config-out FILE is required",
              file=sys.stderr)
        return int(ExitCode.USAGE)
    configure_logging(None, level="warning", stream=sys.stderr)  # stdout: the changes, once
    session = boto3.session.Session(region_name=args.region)
    try:
        spec = ResourceSpec(prefix=args.prefix, function_timeout_s=args.function_timeout,
                            url_auth_type=args.url_auth_type, mode=args.mode,
                            trigger_prefix=args.trigger_prefix,
                            trigger_suffix=args.trigger_suffix,
                            async_max_retry_attempts=args.max_retry_attempts,
                            async_max_event_age_s=args.max_event_age)
    except ValueError as exc:
        print(f"openstack-handler aws provision: error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    if args.url_auth_type == "NONE" and args.image_uri:
        print("openstack-handler: warning: --url-auth-type NONE makes the camera URLs public: "
              "anyone who has them can invoke the functions (and run up the bill)",
              file=sys.stderr)
    elif args.url_auth_type == "NONE":
        print("openstack-handler: note: --url-auth-type applies to the camera URLs, which only "
              "--image-uri makes: this run makes nothing public", file=sys.stderr)
    try:
        provisioned = provision(session, spec)
    except ProvisioningError as exc:
        print(f"openstack-handler aws provision: error: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)
    changes = list(provisioned.changes)
    if args.students:
        seeded = seed_students(session, provisioned.students_table,
                               load_student_records(args.students))
        if seeded:
            changes.append(Change("dynamodb table", provisioned.students_table, "updated",
                                  f"{seeded} student records written"))
    camera = None
    if args.image_uri:
        function = provision_function(session, spec, args.image_uri, args.gallery_in_image,
                                      provisioned=provisioned)
        changes.extend(function.changes)
        for made in provision_camera_functions(session, spec, args.image_uri,
                                               args.gallery_in_image, provisioned):
            changes.extend(made.changes)
        camera = provision_camera(session, spec, provisioned)
        changes.extend(camera.changes)
    try:
        changes.extend(provision_trigger(session, spec, provisioned))
        if args.private_endpoint_url:
            changes.extend(_provision_private(args, spec, provisioned))
    except ProvisioningError as exc:
        print(f"openstack-handler aws provision: error: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)
    values = _read_toml(args.config_out)
    values.update({
        "input_queue_url": provisioned.input_queue_url,
        "output_queue_url": provisioned.output_queue_url,
        "input_dlq_url": provisioned.input_dlq_url,
        "output_dlq_url": provisioned.output_dlq_url,
        "request_queue_url": provisioned.request_queue_url,
        "request_dlq_url": provisioned.request_dlq_url,
        "failure_queue_url": provisioned.failure_queue_url,
        "function_name": spec.function_name,
        "function_timeout_s": spec.function_timeout_s,
        "region": provisioned.region,
    })
    if args.private_endpoint_url:
        from openstack_handler.provisioning.private import private_targets

        concurrency = values.pop("concurrency", None)  # the targets' slots say it now
        previous = values.get("targets")
        written = {t.get("name"): t for t in previous if isinstance(t, dict)} \
            if isinstance(previous, list) else {}
        aws_slots = (args.aws_slots or (concurrency if isinstance(concurrency, int) else None)
                     or written.get("aws", {}).get("slots") or 32)
        values["targets"] = private_targets(
            function_name=spec.function_name, endpoint_url=args.private_endpoint_url,
            profile=args.private_profile, private_slots=args.private_slots, aws_slots=aws_slots)
        if args.burst_after is not None:
            values["burst_after_s"] = args.burst_after
    text = settings_toml(values, header="openstack-handler settings (written by aws provision)")
    if not args.config_out.exists() or args.config_out.read_text(encoding="utf-8") != text:
        args.config_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.config_out.with_name(f".{args.config_out.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, args.config_out)
        changes.append(Change("config file", str(args.config_out), "updated"))
    load_settings(args.config_out, env={})  # what we wrote must load: fail here, not in the daemon
    if args.json:
        print(json.dumps({"changed": bool(changes), "changes": [str(c) for c in changes],
                          "settings": values, "camera": camera.to_json() if camera else None}))
    else:
        if camera is not None:
            print(f"camera: one stage {camera.frame_url}, two stages {camera.detect_url} "
                  f"(auth {camera.auth_type}), answers on {camera.response_queue_url}")
        print(describe_changes(changes))  # the last line reads "unchanged" when nothing changed
    return int(ExitCode.OK)


def _provision_private(args: argparse.Namespace, spec: ResourceSpec,
                       provisioned: Provisioned) -> list[Change]:
    """The video function on the private service (--private-*), and the camera path's frame
    function beside it (the web tier's images run there, as the daemon's videos do): their
    changes."""
    import boto3
    from botocore.config import Config

    from openstack_handler.provisioning.aws import function_environment
    from openstack_handler.provisioning.camera import camera_environment
    from openstack_handler.provisioning.private import (
        FRAME_HANDLER,
        ZIP_GALLERY,
        PrivateFunction,
        ensure_private_function,
    )
    from openstack_handler.provisioning.spec import ProvisioningError

    if not args.private_function_profile:
        raise ProvisioningError("--private-endpoint-url needs --private-function-profile: the "
                                "function's own keys for S3, SQS and DynamoDB (the private "
                                "service has no execution roles)")
    if (args.private_gallery is None) == (args.private_image_uri is None):
        raise ProvisioningError("--private-endpoint-url needs --private-gallery FILE (a zip, "
                                "for a VM) or --private-image-uri URI, one of them")
    keys = boto3.session.Session(profile_name=args.private_function_profile).get_credentials()
    if keys is None:
        raise ProvisioningError(f"profile {args.private_function_profile!r} has no keys")
    frozen = keys.get_frozen_credentials()
    extra = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key,
             **({"AWS_SESSION_TOKEN": frozen.token} if frozen.token else {}),
             # the function reaches the services this run provisioned, wherever they are
             **({"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"]}
                if os.environ.get("AWS_ENDPOINT_URL") else {})}
    if args.private_image_uri is None:
        extra |= {"INFERENCE_RUNTIME": "onnx", "MODEL_DIR": args.private_model_dir}
    gallery = ZIP_GALLERY if args.private_image_uri is None else args.gallery_in_image
    video = PrivateFunction(
        name=spec.function_name, slots=args.private_slots, timeout_s=spec.function_timeout_s,
        memory_mb=spec.function_memory_mb, image_uri=args.private_image_uri,
        gallery=args.private_gallery,
        environment=function_environment(spec, provisioned, gallery, extra))
    frame = PrivateFunction(
        name=spec.frame_function_name, slots=args.private_slots,
        timeout_s=spec.camera_function_timeout_s, memory_mb=spec.camera_function_memory_mb,
        image_uri=args.private_image_uri, gallery=args.private_gallery, command=FRAME_HANDLER,
        environment=camera_environment(spec, provisioned, spec.frame_function_name, gallery,
                                       extra))
    lam = boto3.session.Session(profile_name=args.private_profile,
                                region_name=provisioned.region).client(
        "lambda", endpoint_url=args.private_endpoint_url,
        config=Config(retries={"mode": "standard", "max_attempts": 3}, read_timeout=120))
    return ensure_private_function(lam, video) + ensure_private_function(lam, frame)


def _read_toml(path: Path) -> dict[str, object]:
    if not path.exists():
        return {}
    with path.open("rb") as handle:
        try:
            return tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            print(f"openstack-handler: {path} is not valid TOML: {exc}", file=sys.stderr)
            raise SystemExit(int(ExitCode.CONFIG_ERROR)) from exc
