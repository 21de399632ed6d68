# The two commands users need: `make demo` and `make test`. Both build .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# The venv holds exactly requirements/lock.txt (every package, transitive ones included, with
# hashes): rebuilt from scratch when the lock changes, never resolved against today's registry.
LOCK := requirements/lock.txt
LOCKED := $(VENV)/.locked
SHARED ?= ../shared

.PHONY: demo camera-demo test test-unit bench lint lock clean venv system-tools roots image \
	image-tools browser-tools

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

test: lint roots image browser-tools
	SHARED_DATA=$(SHARED)/data $(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

# Benchmarks (not part of `make test`; about 55 minutes): the function per clip, the torch and
# ONNX runtimes and the image side by side (cold start, warm, RSS, size), the daemon alone
# against a synthetic function, placement on two Lambda services, the real function on the
# private service against the local cloud, end to end with the peer-style baseline, the camera
# path (100 frames, both stages, at the course's pace and flat out), the soak (one warm
# environment of the image, and one torch worker, each serving 2,000 videos: RSS, files and
# threads, bench/out/soak.png), the web tier (1, 10 and 100
# clients, the private target alone and bursting), the function A/B against
# AB_BASE;
# then bench/out/REPORT.md and PNG plots from bench/out/*.json.
# The function's warm time per course clip is compared, interleaved call by call, with this
# commit's (the last before the decision rule that scales with the gallery, issue 30).
AB_BASE ?= 9ae5a9e
bench: $(STAMP) image roots
	mkdir -p bench/out
	SHARED_DATA=$(SHARED)/data $(PY) -m bench.bench_image --data $(SHARED)/data/cse546-2023 \
		--out bench/out > bench/out/image.log
	SHARED_DATA=$(SHARED)/data $(PY) bench/bench_function.py --data $(SHARED)/data/cse546-2023 \
		--out bench/out/function.json > /dev/null
	$(PY) -m bench.soak --data $(SHARED)/data/cse546-2023 --invocations 2000 \
		--kinds image torch --out bench/out > bench/out/soak.log 2>&1
	$(PY) -m bench.orchestration --out bench/out
	$(PY) -m bench.placement --out bench/out 2> bench/out/placement.log
	SHARED_DATA=$(SHARED)/data $(PY) -m bench.private_function --data $(SHARED)/data/cse546-2023 \
		--out bench/out > /dev/null 2> bench/out/private_function.log
	$(PY) -m bench.pool --out bench/out 2> bench/out/pool.log
	$(PY) -m bench.web --data $(SHARED)/data/cse546-2023 --out bench/out > /dev/null \
		2> bench/out/web.log
	SHARED_DATA=$(SHARED)/data $(PY) -m bench.bench_e2e --data $(SHARED)/data/cse546-2023 \
		--count 100 --concurrency 1 2 4 --repeat 3 --out bench/out
	$(PY) -m bench.bench_camera --data $(SHARED)/data/cse546-2023 --count 100 \
		--out bench/out > /dev/null
	rm -rf bench/out/ab_base && mkdir -p bench/out/ab_base
	git archive $(AB_BASE) | tar -x -C bench/out/ab_base
	SHARED_DATA=$(SHARED)/data $(PY) -m bench.ab_function --base bench/out/ab_base --rounds 15 \
		--variants 100 --out bench/out/ab_function.json 2> bench/out/ab_function.log > /dev/null
	$(PY) -m bench.report --out bench/out > /dev/null
	@echo "bench/out/REPORT.md written"

lint: $(STAMP)
	$(VENV)/bin/ruff check openstack_handler localcloud lambda_service lambda_image camera sampledata bench tests

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

# The web tier's page is tested in a real browser: Debian's Chromium and its WebDriver, which
# Selenium drives at /usr/bin/chromedriver (its own browser download cannot work offline).
browser-tools:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "browser-tools: apt-get install chromium chromium-driver"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver >/dev/null; }

# The system tier boots Debian in systemd-nspawn (root built with debootstrap, cached under
# /var/cache/openstack-handler): Debian's packages, installed when missing (needs root).
system-tools:
	@command -v debootstrap >/dev/null && command -v systemd-nspawn >/dev/null \
		&& command -v ssh-keygen >/dev/null || { \
		echo "system-tools: apt-get install debootstrap systemd-container openssh-client"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			debootstrap systemd-container openssh-client >/dev/null; }

# Refresh the lock on purpose, in a commit of its own: `make lock` resolves setup.cfg (every
# extra) and requirements/venv.in for this machine's kind (CPython 3.11, Linux x86_64), keeping
# every version already locked unless UPGRADE names the package (`make lock UPGRADE="boto3
# botocore"`, or UPGRADE=all). Then the subsets, each resolved against that lock: the image's
# packages (lambda_image/requirements.in) and the daemon's on a VM, without and with its
# OpenStack side (the handler role installs one). uv is locked too (the dev extra).
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
	--quiet --custom-compile-command "make lock"
UPGRADE ?=
# (uv keeps the pins of the file it writes: it writes a copy, which replaces the lock only when it
# differs, so that an unchanged lock does not rebuild the venv.)
lock: $(STAMP)
	cp $(LOCK) $(LOCK).new
	$(VENV)/bin/uv pip compile $(LOCK_TARGET) setup.cfg requirements/venv.in --all-extras \
		--override requirements/overrides.txt \
		$(if $(filter all,$(UPGRADE)),--upgrade,$(foreach p,$(UPGRADE),--upgrade-package $(p))) \
		--output-file $(LOCK).new
	if cmp -s $(LOCK).new $(LOCK); then rm $(LOCK).new; else mv $(LOCK).new $(LOCK); fi
	$(VENV)/bin/uv pip compile $(LOCK_TARGET) lambda_image/requirements.in \
		--constraint $(LOCK) --output-file lambda_image/requirements.txt
	$(VENV)/bin/uv pip compile $(LOCK_TARGET) setup.cfg \
		--constraint $(LOCK) --output-file requirements/daemon.txt
	$(VENV)/bin/uv pip compile $(LOCK_TARGET) setup.cfg --extra openstack \
		--constraint $(LOCK) --output-file requirements/daemon-openstack.txt
	@echo "lock: $(LOCK) and its subsets written; commit them on their own"

# The lock, installed as it is: --require-hashes (a file that is not the one locked is refused)
# and --no-deps (the lock is complete; pip would otherwise re-check facenet-pytorch's stale pins,
# which requirements/overrides.txt replaced in the resolution). pip takes the torch pair and its
# CUDA libraries from this machine's wheel cache where they are there.
$(LOCKED): $(LOCK)
	@set -e; started=$$(date +%s); \
	echo "venv: building $(VENV) from $(LOCK) (torch from this machine's wheel cache: about 3 minutes)"; \
	rm -rf $(VENV); \
	$(PYTHON) -m venv $(VENV); \
	$(PIP) install --quiet --require-hashes --no-deps --only-binary :all: -r $(LOCK); \
	touch $(LOCKED); \
	echo "venv: packages installed in $$(( $$(date +%s) - started )) s"

# The project itself, editable, with the build backend from the lock (no isolated build env
# fetched from the registry).
$(STAMP): $(LOCKED) setup.cfg pyproject.toml
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .cache build *.egg-info
