"""The operator's story on a real systemd: `ansible-playbook site.yml` deploys the handler into a
booted Debian VM, systemd runs it hardened as two replicas (handler@1, handler@2) grouped by
handler.service, and videos uploaded on the host come back as CSV files in the VM's results
folder. The tests share one VM and run in file order (deploy → use → break)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import boto3
import pytest
from ansible_helpers import PlayResult, run_playbook
from botocore.config import Config
from botocore.exceptions import ClientError
from daemon_helpers import json_log_lines, s3_event, status_counters, status_targets
from polling import wait_for
from system_helpers import (
    CLOUD_SECRET,
    FUNCTIONS_KEY,
    FUNCTIONS_PORT,
    FUNCTIONS_PROFILE,
    FUNCTIONS_SECRET,
    FUNCTIONS_UNIT,
    REPLICAS,
    UNIT,
    WEB_PORT,
    WEB_TOKEN,
    WEB_UNIT,
    journal_json_lines,
    unit_properties,
)

from camera.frames import video_frames
from localcloud.cloud import DUMMY_CREDENTIALS, EndpointSession, LocalCloud
from localcloud.machines.nspawn import Machine, Network
from openstack_handler.provisioning.private import ZIP_GALLERY, function_zip

pytestmark = pytest.mark.system

RESULTS_DIR = "/srv/handler/results"
CONFIG = "/etc/openstack-handler/handler.toml"
VM = "handler-vm"
#: The course's client on the VM's loopback (its system Python, stdlib only): GET /healthz, then
#: POST / with the image in inputFile; one JSON line per answer.
LOOPBACK_CLIENT = """
import json, sys, urllib.request, uuid
url, path = sys.argv[1], sys.argv[2]
def show(response):
    print(json.dumps({"status": response.status, "type": response.headers["Content-Type"],
                      "body": response.read().decode()}))
show(urllib.request.urlopen(url + "healthz", timeout=60))
boundary = uuid.uuid4().hex
body = (f'--{boundary}\\r\\nContent-Disposition: form-data; name="inputFile"; '
        f'filename="test_8.jpg"\\r\\nContent-Type: image/jpeg\\r\\n\\r\\n').encode()
body += open(path, "rb").read() + f"\\r\\n--{boundary}--\\r\\n".encode()
request = urllib.request.Request(url, data=body, method="POST", headers={
    "Content-Type": f"multipart/form-data; boundary={boundary}"})
show(urllib.request.urlopen(request, timeout=120))
"""


def multipart_file(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file, and its Content-Type."""
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n').encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def test_the_plays_deploy_and_a_second_run_changes_nothing(
        deployed: tuple[PlayResult, PlayResult]) -> None:
    first, second = deployed
    assert first.returncode == 0, first.output[-4000:]
    assert first.recap(VM)["changed"] > 0 and first.recap(VM)["failed"] == 0
    assert second.returncode == 0, second.output[-4000:]
    for host in (VM, "localhost"):
        assert second.recap(host)["changed"] == 0, second.output[-6000:]


def test_the_service_is_active_enabled_and_hardened(deployed: tuple[PlayResult, PlayResult],
                                                    vm: Machine) -> None:
    group = unit_properties(vm, "ActiveState", "UnitFileState", "Wants", unit=UNIT)
    assert group["ActiveState"] == "active" and group["UnitFileState"] == "enabled", group
    assert sorted(group["Wants"].split()) == [f"{r}.service" for r in REPLICAS]
    for replica in REPLICAS:
        props = unit_properties(vm, "ActiveState", "SubState", "Type", "User", "NRestarts",
                                "WatchdogUSec", "PartOf", "Environment", unit=replica)
        assert props["ActiveState"] == "active" and props["SubState"] == "running", props
        assert props["Type"] == "notify" and props["PartOf"] == f"{UNIT}.service"
        assert props["User"] == "handler" and props["NRestarts"] == "0"
        assert props["WatchdogUSec"] != "0"
        assert f"OPENSTACK_HANDLER_REPLICA={replica.split('@')[1]}" in props["Environment"]
    # THEN systemd itself finds nothing wrong with the units as installed
    verify = vm.run(["systemd-analyze", "verify", f"/etc/systemd/system/{UNIT}.service",
                     f"/etc/systemd/system/{UNIT}@.service"], check=False)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = vm.run(["systemd-analyze", "security", "--threshold=25", f"{REPLICAS[0]}.service"],
                      check=False)
    assert security.returncode == 0, security.stdout[-2000:]
    # AND the secrets and settings on disk are readable by their owners only
    modes = vm.run(["stat", "-c", "%n %a %U:%G", CONFIG, "/etc/openstack-handler/aws-credentials",
                    "/etc/openstack-handler/clouds.yaml", RESULTS_DIR]).stdout.split("\n")
    assert modes[:4] == [f"{CONFIG} 640 root:handler",
                         "/etc/openstack-handler/aws-credentials 600 root:root",
                         "/etc/openstack-handler/clouds.yaml 600 root:root",
                         f"{RESULTS_DIR} 750 handler:handler"]


def test_the_journal_holds_the_daemons_json_log_lines(deployed: tuple[PlayResult, PlayResult],
                                                       vm: Machine) -> None:
    lines = wait_for(lambda: len({ln.get("replica") for ln in journal_json_lines(vm)
                                  if ln.get("event") == "handler.started"}) == 2
                     and journal_json_lines(vm), timeout_s=30,
                     what="handler.started from both replicas in the journal")
    started = [ln for ln in lines if ln.get("event") == "handler.started"]
    assert {ln["replica"] for ln in started} == {"1", "2"}
    assert started[-1]["level"] == "info" and "timestamp" in started[-1]
    # AND the heartbeat (openstack extra, clouds.yaml by LoadCredential) met a cloud that refuses
    # connections: said once, and the secret is nowhere in the journal
    try:
        problems = wait_for(lambda: [ln for ln in journal_json_lines(vm)
                                     if ln.get("event") == "cloud_status.unavailable"],
                            timeout_s=60, what="cloud_status.unavailable in the journal")
    except AssertionError as exc:
        cloud_lines = [ln for ln in journal_json_lines(vm) if "cloud" in str(ln.get("event"))
                       or ln.get("level") in ("error", "critical")]
        raise AssertionError(f"{exc}; cloud/error lines: {cloud_lines}") from None
    assert problems[0]["problem"] == "cloud_unreachable"
    journal = vm.run(["journalctl", "--no-pager", "--output", "cat"]).stdout
    assert CLOUD_SECRET not in journal


def test_videos_uploaded_on_the_host_become_csv_files_in_the_vm(
        deployed: tuple[PlayResult, PlayResult], vm: Machine, host_cloud: LocalCloud,
        course_data: Path, course_records: dict[str, str]) -> None:
    s3 = EndpointSession(host_cloud.moto_url).client("s3")
    videos = sorted((course_data / "videos").glob("*.mp4"))
    for video in videos:
        s3.upload_file(str(video), host_cloud.provisioned.input_bucket, video.name)
    results = vm.host_path(RESULTS_DIR)
    wait_for(lambda: len(list(results.glob("*.csv"))) == len(videos), timeout_s=180,
             interval_s=0.5, what=f"{len(videos)} CSV files in the VM's {RESULTS_DIR}")
    for video in videos:
        rows = (results / f"{video.stem}.csv").read_text().splitlines()
        assert rows[0] == course_records[video.name], (video.name, rows)
    owners = vm.run(["stat", "-c", "%U:%G %a", f"{RESULTS_DIR}/{videos[0].stem}.csv"]).stdout
    assert owners.strip() == "handler:handler 640"
    # AND the operator's status command counts the work of both replicas (one state DB)
    def status() -> str:
        return vm.run(["runuser", "-u", "handler", "--", "env",
                       f"AWS_ENDPOINT_URL={host_cloud.moto_url}", "AWS_DEFAULT_REGION=us-east-1",
                       *(f"{k}={v}" for k, v in DUMMY_CREDENTIALS.items()),
                       "/opt/openstack-handler/venv/bin/openstack-handler", "status",
                       "--config", CONFIG]).stdout

    def settled(text: str) -> bool:
        counts = status_counters(text, "videos processed", "result files written")
        return (counts == {"videos processed": str(len(videos)),
                           "result files written": str(len(videos))}
                and text.splitlines()[1].split()[:3] == ["input", "0", "0"])

    texts: list[str] = []
    try:
        wait_for(lambda: texts.append(status()) or settled(texts[-1]), timeout_s=30,
                 interval_s=1, what=f"status counting {len(videos)} videos, input queue empty")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status:\n{texts[-1] if texts else ''}") from None


def test_the_private_function_service_is_hardened_and_serves_only_its_key_holders(
        deployed: tuple[PlayResult, PlayResult], vm: Machine, vm_network: Network) -> None:
    # GIVEN the function service the role enabled
    props = unit_properties(vm, "ActiveState", "SubState", "Type", "User", "WatchdogUSec",
                            "NRestarts", unit=FUNCTIONS_UNIT)
    assert props == {"ActiveState": "active", "SubState": "running", "Type": "notify",
                     "User": "handler-functions", "WatchdogUSec": "1min", "NRestarts": "0"}
    security = vm.run(["systemd-analyze", "security", "--threshold=25",
                       f"{FUNCTIONS_UNIT}.service"], check=False)
    assert security.returncode == 0, security.stdout[-2000:]
    modes = vm.run(["stat", "-c", "%n %a %U:%G", "/etc/handler-functions",
                    "/etc/handler-functions/functions.json",
                    "/etc/handler-functions/keys.json"]).stdout.split("\n")
    assert modes[:3] == ["/etc/handler-functions 750 root:handler-functions",
                         "/etc/handler-functions/functions.json 640 root:handler-functions",
                         "/etc/handler-functions/keys.json 600 root:root"]
    url = f"http://{vm_network.guest_ip}:{FUNCTIONS_PORT}"

    def client(secret: str) -> Any:
        return boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                            aws_access_key_id=FUNCTIONS_KEY, aws_secret_access_key=secret,
                            config=Config(retries={"max_attempts": 0}, read_timeout=60))

    lam = client(FUNCTIONS_SECRET)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("greeter.py", "import os\n\ndef handler(event, context):\n"
                                      "    return {'hello': event.get('name'), 'pid': os.getpid()}\n")
    # WHEN an operator on the host makes a function there with boto3, as on AWS, and calls it
    lam.create_function(FunctionName="greeter", Runtime="python3.11", Handler="greeter.handler",
                        Role="arn:aws:iam::123456789012:role/x", Code={"ZipFile": archive.getvalue()})
    try:
        lam.get_waiter("function_active_v2").wait(
            FunctionName="greeter", WaiterConfig={"Delay": 0.5, "MaxAttempts": 120})
        answer = lam.invoke(FunctionName="greeter", Payload=b'{"name": "vm"}')
        # THEN it runs on the VM; a caller without the secret is refused and runs nothing
        assert "FunctionError" not in answer
        assert json.loads(answer["Payload"].read())["hello"] == "vm"
        with pytest.raises(ClientError) as refused:
            client("not-the-secret").invoke(FunctionName="greeter", Payload=b"{}")
        assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    finally:
        lam.delete_function(FunctionName="greeter")
    journal = vm.run(["journalctl", "--unit", FUNCTIONS_UNIT, "--no-pager", "--output",
                      "cat"]).stdout
    assert "request_refused" in journal and FUNCTIONS_SECRET not in journal


def test_the_pool_controller_and_agent_are_hardened_and_outlive_a_refusing_cloud(
        deployed: tuple[PlayResult, PlayResult], vm: Machine) -> None:
    # GIVEN the pool's two services the role enabled (their cloud refuses every connection)
    for unit in ("handler-autoscale", "handler-pool-agent"):
        props = unit_properties(vm, "ActiveState", "SubState", "Type", "User", "NRestarts",
                                "WatchdogUSec", unit=unit)
        assert props["ActiveState"] == "active" and props["SubState"] == "running", props
        assert props["Type"] == "notify" and props["User"] == "handler-pool", props
        assert props["NRestarts"] == "0" and props["WatchdogUSec"] != "0", props
        # THEN systemd finds nothing wrong with them and rates their exposure at most 2.5
        verify = vm.run(["systemd-analyze", "verify", f"/etc/systemd/system/{unit}.service"],
                        check=False)
        assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
        security = vm.run(["systemd-analyze", "security", "--threshold=25", f"{unit}.service"],
                          check=False)
        assert security.returncode == 0, security.stdout[-2000:]
    modes = vm.run(["stat", "-c", "%n %a %U:%G", "/etc/handler-pool/clouds.yaml",
                    "/etc/handler-pool/autoscale.toml"]).stdout.split("\n")
    assert modes[:2] == ["/etc/handler-pool/clouds.yaml 600 root:root",
                         "/etc/handler-pool/autoscale.toml 640 root:handler-pool"]

    # AND each round is a decision in the journal (here: hold, the pool cannot be read), and
    # neither the password nor the credential secret appears there
    def decisions() -> list[dict[str, Any]]:
        out = vm.run(["journalctl", "--unit", "handler-autoscale", "--output", "cat",
                      "--no-pager"]).stdout
        return [ln for ln in json_log_lines(out) if ln.get("event") == "autoscale.decision"]

    held = wait_for(decisions, timeout_s=60, what="autoscale.decision in the journal")
    assert held[0]["action"] == "hold" and "cannot read the pool" in held[0]["reason"], held[0]
    journal = vm.run(["journalctl", "--no-pager", "--output", "cat"]).stdout
    assert CLOUD_SECRET not in journal


def test_the_web_tier_is_hardened_and_answers_the_course_contract_with_its_token_off_loopback(
        deployed: tuple[PlayResult, PlayResult], vm: Machine, vm_network: Network,
        course_data: Path) -> None:
    # GIVEN the web tier the role enabled, on the VM's loopback and veth addresses
    props = unit_properties(vm, "ActiveState", "SubState", "Type", "User", "NRestarts",
                            "WatchdogUSec", "Environment", unit=WEB_UNIT)
    assert props["ActiveState"] == "active" and props["SubState"] == "running", props
    assert props["Type"] == "notify" and props["User"] == "handler-web", props
    assert props["NRestarts"] == "0" and props["WatchdogUSec"] == "1min", props
    # THEN systemd finds nothing wrong with it and rates its exposure at most 2.5
    verify = vm.run(["systemd-analyze", "verify", f"/etc/systemd/system/{WEB_UNIT}.service"],
                    check=False)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = vm.run(["systemd-analyze", "security", "--threshold=25", f"{WEB_UNIT}.service"],
                      check=False)
    assert security.returncode == 0, security.stdout[-2000:]
    # AND its token is a systemd credential only: not in its settings, unit or environment
    modes = vm.run(["stat", "-c", "%n %a %U:%G", "/etc/handler-web/web.toml",
                    "/etc/handler-web/web-token"]).stdout.split("\n")
    assert modes[:2] == ["/etc/handler-web/web.toml 640 root:handler-web",
                         "/etc/handler-web/web-token 600 root:root"]
    for path in ("/etc/handler-web/web.toml", f"/etc/systemd/system/{WEB_UNIT}.service"):
        assert WEB_TOKEN not in vm.run(["cat", path]).stdout, path
    assert WEB_TOKEN not in props["Environment"]
    # WHEN a course frame (test_8's first) is posted as the course's client does, on loopback
    frame = next(video_frames(course_data / "videos" / "test_8.mp4")).data
    vm.host_path("/root/test_8.jpg").write_bytes(frame)
    local = vm.run(["python3", "-c", LOOPBACK_CLIENT, f"http://127.0.0.1:{WEB_PORT}/",
                    "/root/test_8.jpg"], timeout=120)
    # THEN it is answered <stem>:<name> with no token, and /healthz says it serves
    health, answer = (json.loads(line) for line in local.stdout.splitlines())
    assert health["status"] == 200 and json.loads(health["body"])["status"] == "ok", health
    assert answer == {"status": 200, "type": "text/plain; charset=utf-8",
                      "body": "test_8:president_obama"}, answer
    # AND from the host (off loopback) the same request needs the token
    body, content_type = multipart_file("inputFile", "test_8.jpg", frame)

    def post(headers: dict[str, str]) -> tuple[int, str]:
        connection = http.client.HTTPConnection(vm_network.guest_ip, WEB_PORT, timeout=120)
        try:
            connection.request("POST", "/", body=body,
                               headers={"Content-Type": content_type, **headers})
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    refused = post({})
    assert refused[0] == 401 and "Unauthorized" in refused[1], refused
    assert post({"Authorization": "Bearer not-the-token"})[0] == 401
    assert post({"Authorization": f"Bearer {WEB_TOKEN}"}) == (200, "test_8:president_obama")
    # AND its journal has a line per request, and the token nowhere
    lines = json_log_lines(vm.run(["journalctl", "--unit", WEB_UNIT, "--output", "cat",
                                   "--no-pager"]).stdout)
    assert [(ln["path"], ln["status"]) for ln in lines if ln.get("event") == "web.request"] == [
        ("/healthz", 200), ("/", 200), ("/", 401), ("/", 401), ("/", 200)], lines
    journal = vm.run(["journalctl", "--no-pager", "--output", "cat"]).stdout
    assert WEB_TOKEN not in journal


def test_stop_and_start_reach_every_replica(deployed: tuple[PlayResult, PlayResult],
                                            vm: Machine) -> None:
    # WHEN the operator stops the handler: the command returns once every replica has stopped
    vm.run(["systemctl", "stop", UNIT], timeout=120)
    states = [unit_properties(vm, "ActiveState", unit=r)["ActiveState"] for r in REPLICAS]
    assert states == ["inactive", "inactive"]
    # THEN a start brings them all back (the group unit wants them), to READY
    vm.run(["systemctl", "start", UNIT], timeout=120)
    wait_for(lambda: all(unit_properties(vm, "ActiveState", unit=r)["ActiveState"] == "active"
                         for r in REPLICAS), timeout_s=60, interval_s=0.5,
             what="both replicas active again")


def test_systemd_restarts_one_replica_after_kill_9_and_leaves_the_other_alone(
        deployed: tuple[PlayResult, PlayResult], vm: Machine) -> None:
    before = unit_properties(vm, "MainPID", "NRestarts")
    other = unit_properties(vm, "MainPID", "NRestarts", unit=REPLICAS[1])
    assert before["NRestarts"] == "0"
    vm.run(["kill", "-9", before["MainPID"]])
    after = wait_for(lambda: (p := unit_properties(vm, "MainPID", "NRestarts", "ActiveState"))
                     ["ActiveState"] == "active" and p["NRestarts"] == "1" and p,
                     timeout_s=60, interval_s=0.5, what="the restart after kill -9")
    assert after["MainPID"] not in ("0", before["MainPID"])
    assert unit_properties(vm, "MainPID", "NRestarts", unit=REPLICAS[1]) == other


def test_a_bad_config_exits_78_and_is_not_restarted_in_a_loop(
        deployed: tuple[PlayResult, PlayResult], vm: Machine) -> None:
    # GIVEN settings that cannot work, written behind Ansible's back (its validate would refuse)
    good = vm.run(["cat", CONFIG]).stdout
    vm.run(["tee", CONFIG], input=good + "concurrency = 0\n")
    # WHEN the service restarts
    vm.run(["systemctl", "restart", UNIT], check=False, timeout=120)
    for replica in REPLICAS:
        failed = wait_for(lambda r=replica: (p := unit_properties(
            vm, "ActiveState", "ExecMainStatus", "NRestarts", "Result", unit=r))
            ["ActiveState"] == "failed" and p, timeout_s=60, interval_s=0.5,
            what=f"{replica} to fail")
        # THEN each replica exited with EX_CONFIG and systemd gave up at once
        # (RestartPreventExitStatus=78)
        assert failed["ExecMainStatus"] == "78" and failed["Result"] == "exit-code", failed
    restarts = {r: unit_properties(vm, "NRestarts", unit=r)["NRestarts"] for r in REPLICAS}
    time.sleep(6)  # three RestartSec periods: a restart loop would have shown by now
    for replica in REPLICAS:
        assert unit_properties(vm, "ActiveState", "NRestarts", unit=replica) == {
            "ActiveState": "failed", "NRestarts": restarts[replica]}
    journal = vm.run(["journalctl", "--unit", f"{UNIT}@*", "--no-pager", "--output", "cat"]).stdout
    assert "configuration error" in journal and "concurrency" in journal
    # AND once the settings are fixed, one restart of the handler brings every replica back
    vm.run(["tee", CONFIG], input=good)
    vm.run(["systemctl", "restart", UNIT], timeout=120)
    wait_for(lambda: all(unit_properties(vm, "ActiveState", unit=r)["ActiveState"] == "active"
                         for r in REPLICAS), timeout_s=60, interval_s=0.5,
             what="both replicas active after the fix")


def test_the_course_clips_are_recognised_on_the_vm_and_its_overflow_runs_on_the_hosts_lambda(
        deployed: tuple[PlayResult, PlayResult], deployment_files: tuple[Path, Path],
        vm: Machine, vm_network: Network, host_cloud: LocalCloud, course_data: Path,
        course_records: dict[str, str], tmp_path: Path) -> None:
    """The hybrid on one VM: the recognition function on the VM's own service first, the host's
    Lambda (standing for AWS) past its slots. Last in the file: it re-plays the handler with
    targets, which the tests above do not expect."""
    lam = boto3.client("lambda", endpoint_url=f"http://{vm_network.guest_ip}:{FUNCTIONS_PORT}",
                       region_name="us-east-1", aws_access_key_id=FUNCTIONS_KEY,
                       aws_secret_access_key=FUNCTIONS_SECRET,
                       config=Config(retries={"max_attempts": 0}, read_timeout=120))
    name = host_cloud.resources.function_name
    environment = {key: value for key, value in host_cloud.function_spec().environment.items()
                   if key not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    environment |= {"GALLERY_PATH": ZIP_GALLERY, "INFERENCE_RUNTIME": "onnx",
                    "MODEL_DIR": "/opt/handler-functions/models", "INFERENCE_THREADS": "1"}
    # GIVEN the recognition function made on the VM's service from a zip (lambda_image and the
    # course gallery; its packages and models are the runtime's, which the role installed), as
    # an operator would on AWS, with 2 slots (one per daemon replica)
    lam.create_function(FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::1:role/x",
                        Handler="lambda_image.handlers.s3_handler", Timeout=60, MemorySize=2048,
                        Code={"ZipFile": function_zip(course_data / "encoding")},
                        Environment={"Variables": environment})
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    # AND the service restarted since: its functions are kept in its state directory
    vm.run(["systemctl", "restart", FUNCTIONS_UNIT], timeout=180)
    lam.get_waiter("function_active_v2").wait(FunctionName=name,
                                              WaiterConfig={"Delay": 1, "MaxAttempts": 180})
    assert lam.get_function_concurrency(FunctionName=name) == {
        "ReservedConcurrentExecutions": 2, "ResponseMetadata": ANY}
    # AND the daemon re-played with two targets: the VM's service first, the host's Lambda
    # (AWS's stand-in) at once when the VM's slots are full
    inventory, extra_vars = deployment_files
    variables = json.loads(extra_vars.read_text())
    settings = {k: v for k, v in variables["handler_settings"].items() if k != "concurrency"}
    settings |= {"burst_after_s": 0, "targets": [
        {"name": "private", "slots": 1, "function_name": name, "profile": FUNCTIONS_PROFILE,
         "endpoint_url": f"http://{vm_network.guest_ip}:{FUNCTIONS_PORT}"},
        {"name": "aws", "slots": 2, "function_name": name}]}
    hybrid_vars = tmp_path / "vars-hybrid.json"
    hybrid_vars.write_text(json.dumps({**variables, "handler_settings": settings}))
    played = run_playbook(inventory, hybrid_vars, "--tags", "aws,handler",
                          log_path=tmp_path / "ansible.log")
    assert played.returncode == 0, played.output[-3000:]
    results = vm.host_path(RESULTS_DIR) / "hybrid"  # a key's prefix is a directory there
    # WHEN the course clips are uploaded
    s3 = EndpointSession(host_cloud.moto_url).client("s3")
    bucket = host_cloud.provisioned.input_bucket
    videos = sorted((course_data / "videos").glob("*.mp4"))
    for video in videos:
        s3.upload_file(str(video), bucket, f"hybrid/{video.name}")
    # THEN every one is recognised right, on the VM while it had a slot and on the host past it
    wait_for(lambda: len(list(results.glob("*.csv"))) == len(videos), timeout_s=240,
             interval_s=0.5, what=f"{len(videos)} CSV files in the VM's {RESULTS_DIR}")
    for video in videos:
        rows = (results / f"{video.stem}.csv").read_text().splitlines()
        assert rows[0] == course_records[video.name], (video.name, rows)
    status = vm.run(["runuser", "-u", "handler", "--", "env",
                     f"AWS_ENDPOINT_URL={host_cloud.moto_url}", "AWS_DEFAULT_REGION=us-east-1",
                     *(f"{k}={v}" for k, v in DUMMY_CREDENTIALS.items()),
                     "/opt/openstack-handler/venv/bin/openstack-handler", "status",
                     "--config", CONFIG]).stdout
    targets = status_targets(status)
    ran = {target: int(targets[target]["INVOCATIONS"]) for target in ("private", "aws")}
    assert ran["private"] >= 1 and ran["aws"] >= 1 and sum(ran.values()) >= len(videos), status
    # AND given alone, the VM's function recognises each course clip itself: 8/8
    for video in videos:
        etag = s3.head_object(Bucket=bucket, Key=f"hybrid/{video.name}")["ETag"].strip('"')
        answer = lam.invoke(FunctionName=name, LogType="Tail", Payload=json.dumps(
            s3_event(bucket, f"hybrid/{video.name}", etag=etag,
                     size=video.stat().st_size)).encode())
        assert "FunctionError" not in answer, answer["Payload"].read()
        result = json.loads(answer["Payload"].read())["results"][0]
        assert result["status"] == "ok", result
        assert result["csv"].splitlines()[0] == course_records[video.name], (video.name, result)
        assert "REPORT RequestId: " in base64.b64decode(answer["LogResult"]).decode()
