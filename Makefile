# Herald: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lock run test protos sdk breaking-baseline lint bench clean
# `make` alone installs everything `make run` and `make test` need.
.DEFAULT_GOAL := install

UV     := $(BIN)/uv
# uv installs into .venv exactly what uv.lock pins (hashes checked), nothing from the index's newest.
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never
# Every installed module is compiled to bytecode once, at install: where PYTHONDONTWRITEBYTECODE is set (it is
# on the machines this project was measured on), Python never writes a .pyc and compiles every module again in
# every process it starts: about 4.5 s of CPU per Herald process, against 1.8 s compiled (README, Dependencies).
export UV_COMPILE_BYTECODE := 1
# Herald's own modules (compileall recompiles only what changed since; Python reads a .pyc whatever that setting).
COMPILE := $(BIN)/python -m compileall -q -j 0 services translator gen

# uv itself comes from tools/uv-requirements.txt, pinned with hashes, through the venv's own pip.
$(UV): tools/uv-requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --isolated --quiet --disable-pip-version-check --require-hashes --no-deps \
		-r tools/uv-requirements.txt
	touch $(UV)

$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --locked --quiet --python $(BIN)/python
	touch $(STAMP)

# Refreshes uv.lock to the newest releases pyproject.toml allows (then run make protos and make test).
lock: $(UV)
	$(UV) lock --upgrade

# The browser tests (tests/browser/) drive Debian's Chromium through its chromedriver: `make install` (so
# `make test`) has apt-get install both when either is missing (as root, else through sudo). Running Herald,
# linting and benchmarks need no browser.
BROWSER := /usr/bin/chromium /usr/bin/chromedriver
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)

$(BROWSER) &:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver

# Stubs for other languages (tools/sdk.py): the TypeScript plugin and compiler come from npm, pinned by
# sdk/package-lock.json; the Java generators and the jars that compile their output come from Debian.
# tests/polyglot/ is a Node.js client written with the SDK package alone, whose dependencies (@grpc/grpc-js,
# @bufbuild/protobuf) are sdk/'s. `npm ci` runs again only when the lock file changes, and takes packages
# from npm's cache when it has them.
NODE          := /usr/bin/node /usr/bin/npm
NODE_PACKAGES := sdk/node_modules/.package-lock.json
JAVA_SDK      := /usr/bin/protoc /usr/bin/grpc_java_plugin /usr/bin/javac /usr/share/java/grpc-stub.jar \
	/usr/share/java/protobuf.jar /usr/share/java/geronimo-annotation-1.3-spec.jar

%/node_modules/.package-lock.json: %/package-lock.json %/package.json | $(NODE)
	cd $* && npm ci --prefer-offline --no-audit --no-fund --loglevel=error
	touch $@

# Node.js and npm from Debian when the machine has none.
$(NODE) &:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm

$(JAVA_SDK) &:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler \
		protobuf-compiler-grpc-java-plugin libprotobuf-java libgrpc-java libgeronimo-annotation-1.3-spec-java \
		default-jdk-headless

install: $(STAMP) $(BROWSER) $(NODE_PACKAGES) $(JAVA_SDK)

run: $(STAMP)
	$(COMPILE)
	$(BIN)/herald run

# The suite runs in PYTEST_WORKERS processes (pytest-xdist), each test file whole in one of them, so that a file's
# Herald starts once; every process brings up its own embedded PostgreSQL and NATS. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
test: install
	$(COMPILE)
	$(BIN)/python -m pytest -q -p no:cacheprovider \
		$(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

protos: $(STAMP)
	$(BIN)/python tools/protogen.py gen

# The SDK in sdk/gen (sdk/README.md): the Node.js package @herald/sdk (TypeScript compiled to JavaScript, with the
# .proto files and google.rpc's error details) and the Java sources; not committed, like any build output.
sdk: $(STAMP) $(NODE_PACKAGES) $(JAVA_SDK)
	$(BIN)/python tools/sdk.py package

# Records the protos as released: `buf breaking` (tests/test_sdk.py) fails any later change that breaks them.
# Run it when a release is cut, and only then; a breaking change belongs in a new package version (v2).
breaking-baseline: $(STAMP)
	$(BIN)/buf build --exclude-source-info -o protos/baseline.binpb

lint: $(STAMP)
	$(BIN)/ruff check services translator tests bench tools
	$(BIN)/ruff format --check services translator tests bench tools
	$(BIN)/mypy services translator
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code

# Each benchmark prints its figures; see the README for what they measured.
bench: $(STAMP)
	$(BIN)/python bench/translator.py
	$(BIN)/python bench/audience.py
	$(BIN)/python bench/import.py
	$(BIN)/python bench/smtp_ceiling.py
	$(BIN)/python bench/render.py
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/chaos.py
	$(BIN)/python bench/dkim_signing.py
	$(BIN)/python bench/bounces.py
	$(BIN)/python bench/deferred.py

clean:
	rm -rf $(VENV) var
