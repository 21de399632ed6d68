"""The course's image contract through the real web tier on the local cloud: what the course's
client sends (multipart ``inputFile``) answered ``<stem>:<name>``, stored as the course's service
stored it, the whole answer as JSON, 100 concurrent clients — and every kind of bad input."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.web_harness import WebTier, multipart, post_file, request
from localcloud.cloud import LocalCloud

#: long enough for the web tier to see it is idle and give freed memory back (its loop: 1 s)
IDLE_S = 2.5


def test_an_image_is_answered_stem_name_and_stored_as_the_course_did(
        web: WebTier, web_cloud: LocalCloud, frames: list[tuple[str, bytes, str]]) -> None:
    s3 = web_cloud.session().client("s3")
    p = web_cloud.provisioned
    for filename, data, person in frames[:8]:  # one frame of each clip
        # WHEN the course's client posts it
        answer = post_file(web.url, filename, data)
        # THEN the answer is the course's line, and both objects are where its grader looks
        stem = filename.rsplit(".", 1)[0]
        assert (answer.status, answer.text) == (200, f"{stem}:{person}")
        assert answer.headers["content-type"].startswith("text/plain")
        assert s3.get_object(Bucket=p.input_bucket, Key=filename)["Body"].read() == data
        assert s3.get_object(Bucket=p.output_bucket, Key=stem)["Body"].read() == person.encode()


def test_accept_json_gets_every_face_its_decision_the_record_and_where_it_ran(
        web: WebTier, frames: list[tuple[str, bytes, str]], course_records: dict[str, str]) -> None:
    filename, data, person = frames[7]  # test_8: president_obama
    answer = post_file(web.url, filename, data, accept="application/json")
    assert answer.status == 200
    doc = answer.json()
    assert doc["result"] == person and doc["stem"] == filename[:-4]
    assert doc["people"][0]["name"] == person and doc["people"][0]["major"]
    face = doc["faces"][0]
    assert face["name"] == person and face["decision"] in ("confident", "confirmed")
    assert 0 < face["distance"] < 0.6
    assert doc["target"] == "lambda"
    assert set(doc["timings_ms"]) == {"upload", "placement", "recognition", "store", "total"}


def test_100_concurrent_clients_are_all_answered_right_and_the_service_returns_to_idle(
        web: WebTier, frames: list[tuple[str, bytes, str]]) -> None:
    def burst() -> list[tuple[int, str, str]]:
        with ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(lambda f: post_file(web.url, f[0], f[1]), frames))
        return [(a.status, a.text, f"{f[0].rsplit('.', 1)[0]}:{f[2]}")
                for a, f in zip(answers, frames, strict=True)]

    # GIVEN a service that has seen one such burst (its pools and sockets made once), idle
    assert all(status == 200 for status, _, _ in burst())
    time.sleep(IDLE_S)
    idle_rss, idle_files = web.rss_kb(), web.open_files()
    # WHEN 100 clients post a frame each at once
    started = time.monotonic()
    results = burst()
    elapsed = time.monotonic() - started
    # THEN every one is answered with its frame's person, none failed
    wrong = [(status, text, want) for status, text, want in results
             if status != 200 or text != want]
    assert wrong == [], wrong[:5]
    # AND memory and open files are back at their idle level once it is idle again
    time.sleep(IDLE_S)
    assert web.open_files() <= idle_files + 2, (idle_files, web.open_files())
    assert web.rss_kb() <= idle_rss * 1.10 + 4096, (idle_rss, web.rss_kb())
    print(f"100 concurrent frames in {elapsed:.1f} s; RSS {idle_rss} → {web.rss_kb()} kB")


def test_bad_input_gets_a_clear_4xx_and_the_service_keeps_serving(
        web: WebTier, web_cloud: LocalCloud, frames: list[tuple[str, bytes, str]],
        course_data: Path) -> None:
    s3 = web_cloud.session().client("s3")
    bucket = web_cloud.provisioned.input_bucket
    _, jpeg, person = frames[0]
    # no inputFile
    answer = post_file(web.url, "a.jpg", jpeg, field_name="file", accept="application/json")
    assert answer.status == 400 and "inputFile" in answer.json()["error"]["reason"]
    # inputFile as a text field, not a file
    answer = post_file(web.url, None, b"hello", accept="application/json")
    assert answer.status == 400 and "must be a file" in answer.json()["error"]["reason"]
    # not multipart at all
    answer = request(web.url, "POST", "/", body=jpeg, headers={"Content-Type": "image/jpeg"})
    assert answer.status == 400
    # text
    answer = post_file(web.url, "notes.jpg", b"just some words\n", accept="application/json")
    assert answer.status == 400 and "text" in answer.json()["error"]["reason"]
    # a truncated JPEG: refused, and nothing of it kept
    answer = post_file(web.url, "cut.jpg", jpeg[:3000], accept="application/json")
    assert answer.status == 400 and "truncated" in answer.json()["error"]["reason"]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="cut.")
    # a video on /
    video = (course_data / "videos" / "test_0.mp4").read_bytes()
    answer = post_file(web.url, "test_0.mp4", video, accept="application/json")
    assert answer.status == 400 and "/videos" in answer.json()["error"]["reason"]
    # an empty file
    answer = post_file(web.url, "empty.jpg", b"", accept="application/json")
    assert answer.status == 400 and "empty" in answer.json()["error"]["reason"]
    # over the 6 MB limit: 413, from its Content-Length and while streaming (http.client sends
    # an iterable body chunked, with no Content-Length)
    big = jpeg + b"\0" * (6 * 1024 * 1024)
    answer = post_file(web.url, "big.jpg", big, accept="application/json")
    assert answer.status == 413
    body, content_type = multipart({"inputFile": ("big.jpg", big)})
    answer = request(web.url, "POST", "/", body=iter([body[i:i + 65536]
                                                       for i in range(0, len(body), 65536)]),
                     headers={"Content-Type": content_type})
    assert answer.status == 413
    # hostile names are never paths: one plain key, the answer's stem the same
    for hostile in ("../../etc/passwd.jpg", "..\\..\\win.jpg", "a\x00b.jpg", "x" * 2048 + ".jpg"):
        answer = post_file(web.url, hostile, jpeg)
        assert answer.status == 200, (hostile[:20], answer.text)
        stem, name = answer.text.split(":")
        assert name == person and "/" not in stem and "\\" not in stem and "\0" not in stem
        assert 0 < len(stem) <= 100 and not stem.startswith(".")
        s3.head_object(Bucket=bucket, Key=f"{stem}.jpg")
    # AND the service still answers
    assert post_file(web.url, "after.jpg", jpeg).text == f"after:{person}"
    assert not web.events("web.unhandled")
    assert all('"status": 500' not in line for line in web.lines)
