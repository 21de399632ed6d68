"""The camera path's three functions run from the built image, as Lambda runs container images:
one image, the CMD picking each entry point, the one-stage URL and the two-stage URL with the
request queue's trigger invoking the image's recognize stage; in both, the image's functions
confirm floki's borderline face by the frame his camera sent before (CAMERA_TRACKS_TABLE).

The default rule names floki on every frame (docs/decision-rule.md); the functions here run with
a stricter one (`CONFIRM_FRACTION` 0.70, given to them as Lambda environment), under which he is
borderline, so that the image's camera tracks are exercised too."""

from __future__ import annotations

from pathlib import Path

from camera.frames import video_frames
from camera.run import SendSettings, send_all
from localcloud.cloud import LocalCloud
from openstack_handler.provisioning.spec import ResourceSpec

SPEC = ResourceSpec(prefix="imgcam", url_auth_type="NONE")
#: of his identity's spacing: floki's frames lie at 0.74-0.78 of it, so all are borderline
STRICT = {"CONFIRM_FRACTION": "0.70"}
CLIPS = {"test_0": "president_trump", "test_7": "morgan_freeman"}


def test_the_camera_path_through_the_image_one_and_two_stages(
        function_image: str, course_data: Path, tmp_path: Path) -> None:
    # GIVEN the first frame the Pi would send of two course clips, and the camera path's
    # functions served from the image (no worker process imports lambda_image)
    frames = [next(iter(video_frames(course_data / "videos" / f"{clip}.mp4", every=15)))
              for clip in CLIPS]
    # AND floki's first two frames, one camera's stream: borderline on both under STRICT
    frames += list(video_frames(course_data / "videos" / "test_6.mp4", every=15))[:2]
    with LocalCloud(gallery=course_data / "encoding", students=course_data / "student_data.json",
                    video=False, camera=True, resources=SPEC, event_source_poll_wait_s=1,
                    image=function_image, extra_environment=STRICT,
                    work_dir=tmp_path) as cloud:
        session = cloud.session()
        camera = cloud.camera
        lam = session.client("lambda")
        configurations = {name: lam.get_function(FunctionName=name)["Configuration"]
                          for name in SPEC.camera_functions()}
        clients = {"sqs": session.client("sqs"), "s3": session.client("s3")}
        # WHEN each frame goes through one stage, then through two
        one = send_all(frames, SendSettings(url=camera.frame_url, auth="NONE", timeout_s=60),
                       **clients)
        two = send_all(frames, SendSettings(url=camera.detect_url, auth="NONE", timeout_s=60,
                                            response_queue_url=camera.response_queue_url),
                       **clients)
    # THEN both paths name both people, and each function is the image with its own CMD
    for report in (one, two):
        assert not report.failed, [(r.frame.filename, r.error) for r in report.failed]
        assert {r.frame.source: r.result for r in report.results[:2]} == CLIPS
        # floki: nothing before his first frame; the first confirms the second
        assert [(r.camera[1] if r.camera else None, r.result) for r in report.results[2:]] == [
            (0, "unknown_person"), (1, "floki")]
        assert report.duplicates == 0
    for name, entry_point in SPEC.camera_functions().items():
        configuration = configurations[name]
        assert configuration["PackageType"] == "Image"
        assert configuration["ImageConfigResponse"]["ImageConfig"]["Command"] == [entry_point]
