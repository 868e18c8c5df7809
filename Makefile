# Every target runs inside .venv at the repository root; `make install` creates it.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# buf's CLI comes from npm (package.json), as do the Node.js example's gRPC packages
# (examples/node/package.json); `npm ci` writes these files last.
NODE_STAMP := node_modules/.package-lock.json
NODE_EXAMPLE_STAMP := examples/node/node_modules/.package-lock.json
BUF     := node_modules/.bin/buf
DATA    ?= ../shared/data/aclImdb.tar.gz
# SST-2, CAD and contrast sets (training/extra_data.py); used when the folder exists.
EXTRA   ?= ../shared/data/extra
EXTRA_FLAG = $(if $(wildcard $(EXTRA)),--extra-data $(EXTRA))
# The 49,731 unlabelled reviews (train/unsup); a full official archive holds them too.
UNLABELLED ?= ../shared/data/aclImdb-unsup.tar.gz
UNLABELLED_FLAG = $(if $(wildcard $(UNLABELLED)),--unlabelled-data $(UNLABELLED))
PRESET  ?= student-bag
# The trained version (an LSTM without a bag) that `make finetune` starts from.
BASE    ?= models/imdb-lstm/5
HOST    ?= localhost
PORT    ?= 50051
HTTP_PORT ?= 8080
WORKERS ?= 0

IMDB_URL    := https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz
# Published SHA-256 of aclImdb_v1.tar.gz.
IMDB_SHA256 := c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe

.PHONY: install serve test test-image image lint lint-imports format proto proto-check proto-lint proto-breaking train finetune teacher train-seed eval data bench bench-quick bench-protocol bench-doors soak soak-quick soak-long soak-long-workers native-leaks kill-test slowdown explain-eval explain-bench clean

install: $(STAMP)
# One pip command, so the resolver takes the server's imdb-sentiment-client from ./client.
$(STAMP): pyproject.toml client/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./client -e '.[dev,train]'
	@# In a venv from before the split, uninstalling the old server distribution removes
	@# the sentiment-client script that the client distribution has just installed.
	test -x $(BIN)/sentiment-client || $(BIN)/pip install --quiet --no-deps --force-reinstall -e ./client
	touch $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent

$(NODE_EXAMPLE_STAMP): examples/node/package.json examples/node/package-lock.json
	cd examples/node && npm ci --no-audit --no-fund --silent

# WORKERS front processes over one model process (server/processes/); 0: one per core.
serve: $(STAMP)
	$(BIN)/sentiment-server --host $(HOST) --port $(PORT) --http-port $(HTTP_PORT) --workers $(WORKERS)

# The image tests (marker `image`: tests/test_image.py, tests/test_kube_play.py) build and run
# the container, minutes cold; they run in `make test-image`, and in CI after `make test`.
test: $(STAMP) $(NODE_STAMP) $(NODE_EXAMPLE_STAMP)
	$(BIN)/pytest -q -m "not image"

# The server's container image (Containerfile) with podman, on a Debian base made here from
# Debian's packages, from a wheelhouse built on the host: the build itself has no network.
# Caches (root file system, wheels) live in ~/.cache/imdb-sentiment, keyed on their inputs.
image: $(STAMP)
	$(BIN)/python deploy/podman/build_image.py

test-image: image
	SENTIMENT_IMAGE_TESTS=required $(BIN)/pytest -q -m image

lint: lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The layering as import-linter contracts ([tool.importlinter] in pyproject.toml): which
# part of server/ may import which, the batcher free of TensorFlow and gRPC, training/ and
# the client free of server/ and bench/, no import circle in server/ or bench/.
lint-imports: $(STAMP)
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# protos/ is the source of truth, each file under its package's path (sentiment/v1/). The
# stubs land in the client package: protos/ is mapped to imdb_sentiment_client/, so the
# module is imdb_sentiment_client.sentiment.v1.sentiment_pb2 and the imports inside the
# generated files resolve within the client package.
PROTOS := protos/sentiment/v1/sentiment.proto
STUBS  := client/src/imdb_sentiment_client/sentiment/v1
# KServe's Open Inference Protocol (protos/inference/, vendored) is the server's alone: its
# stubs land in server/api/inference/ (module server.api.inference.grpc_predict_v2_pb2), not
# in the client distribution, whose users speak it with tritonclient, and protobuf refuses
# tritonclient's `inference` messages and these in one process (protos/inference/README.md).
SERVER_PROTOS := protos/inference/grpc_predict_v2.proto
SERVER_STUBS  := server/api/inference
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iimdb_sentiment_client=protos --python_out=client/src \
		--pyi_out=client/src --grpc_python_out=client/src $(PROTOS)
	$(BIN)/python -m grpc_tools.protoc -Iserver/api=protos --python_out=. --pyi_out=. \
		--grpc_python_out=. $(SERVER_PROTOS)

proto-check: proto
	@test -z "$$(git status --porcelain -- '$(STUBS)/*_pb2*' '$(SERVER_STUBS)/*_pb2*')" \
		|| (git status --short -- '$(STUBS)/*_pb2*' '$(SERVER_STUBS)/*_pb2*'; \
		    echo "generated stubs are stale: run 'make proto' and commit" >&2; exit 1)

# buf's default (STANDARD) rules, less the two buf.yaml waives and says why.
proto-lint: $(NODE_STAMP)
	$(BUF) lint

# protos/ as it is now against protos/ at PROTO_BASE: by default where this branch left
# main, or on main itself the commit before, which is what CI checks. PACKAGE rules
# (buf.yaml): a renumbered, removed or renamed field, or a removed RPC, fails; an added one
# passes. The old protos/ comes out of git by `git archive`, which also works in a worktree.
PROTO_BASE ?=
proto-breaking: $(NODE_STAMP)
	@base="$(PROTO_BASE)"; \
	if [ -z "$$base" ]; then base=$$(git merge-base HEAD main 2>/dev/null || true); \
		if [ -z "$$base" ] || [ "$$base" = "$$(git rev-parse HEAD)" ]; then \
			base=$$(git rev-parse -q --verify 'HEAD~1^{commit}' || true); fi; fi; \
	if [ -z "$$base" ] || [ -z "$$(git ls-tree "$$base" protos)" ]; then \
		echo "proto-breaking: no earlier protos/ in git to compare with"; exit 0; fi; \
	against=$$(mktemp -d); trap 'rm -rf "$$against"' EXIT; \
	git archive "$$base" protos | tar -x -C "$$against"; \
	echo "buf breaking: protos/ against $$(git rev-parse --short "$$base")"; \
	$(BUF) breaking --against "$$against/protos"

# Version 6's recipe: the student LSTM (about 35 min here), then the bag fitted beside it (about
# a minute). Version 6 itself is version 5 plus its bag: `sentiment-fit-bag --base models/imdb-lstm/5`.
train: $(STAMP)
	$(BIN)/sentiment-train --data $(DATA) $(EXTRA_FLAG) $(UNLABELLED_FLAG) --preset $(PRESET)

# Version 8's recipe from version 5 (`make train PRESET=student`): adversarial fine-tuning of
# its LSTM on the word vectors (epsilon 0.05; version 7's was 0.02), each epoch kept only if it
# beats the base on validation, then a bag fitted beside it (about 40 min here). Writes the next
# version, with no test score.
finetune: $(STAMP)
	$(BIN)/sentiment-finetune --base $(BASE) --data $(DATA) $(EXTRA_FLAG) $(UNLABELLED_FLAG) --no-report

# The teacher's scores of the unlabelled reviews (models/teacher/), which `make train` learns
# from: fitted once, a minute or two, and checked in.
teacher: $(STAMP)
	$(BIN)/sentiment-teach --data $(DATA) $(EXTRA_FLAG) --unlabelled-data $(UNLABELLED)

train-seed: $(STAMP)
	$(BIN)/sentiment-train --data $(DATA) --preset seed --out models/imdb-lstm-seed

eval: $(STAMP)
	$(BIN)/sentiment-eval --data $(DATA) $(EXTRA_FLAG)

# For users with internet access: fetch the official archive and verify it.
data:
	mkdir -p data
	test -f data/aclImdb_v1.tar.gz || curl -fL --retry 3 -o data/aclImdb_v1.tar.gz.part $(IMDB_URL)
	test -f data/aclImdb_v1.tar.gz || mv data/aclImdb_v1.tar.gz.part data/aclImdb_v1.tar.gz
	echo "$(IMDB_SHA256)  data/aclImdb_v1.tar.gz" | sha256sum -c -
	@echo "now: make train DATA=data/aclImdb_v1.tar.gz"

# Side-by-side throughput and latency comparison; writes reports/bench/.
bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

# The Open Inference Protocol's doors (ModelInfer, POST /v2/.../infer) beside Predict and
# POST /predict at c=1 and c=64, alone; make bench and bench-quick measure them too.
bench-protocol: $(STAMP)
	$(BIN)/python -m bench.protocol_doors

# The gRPC and HTTP doors of one process, of --workers 2 and of two whole servers on one port,
# in turns (bench/doors.py; also a section of make bench).
bench-doors: $(STAMP)
	$(BIN)/python -m bench.doors

# 100,000+ mixed requests at concurrency >= 128 on loopback; reports lost requests and RSS.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

soak-quick: $(STAMP)
	$(BIN)/python -m bench.soak --quick

# 1,000,000 requests (about an hour here): the memory curve, every 50,000, to reports/soak/.
soak-long: $(STAMP)
	$(BIN)/python -m bench.soak --long --json-out reports/soak/long.json \
		--plot-out reports/soak/memory-long.svg

# The same with two fronts over one model process, each front replaced after 100,000 calls:
# RSS summed over every process (issue #27's bound on memory that creeps).
soak-long-workers: $(STAMP)
	$(BIN)/python -m bench.soak --long --workers 2 --max-calls-per-worker 100000 \
		--json-out reports/soak/long-workers.json --plot-out reports/soak/memory-long-workers.svg

# Each kind of the soak's mix alone under heaptrack: the native bytes each kind leaves behind.
native-leaks: $(STAMP)
	$(BIN)/python -m bench.native_leaks --json-out reports/soak/native-leaks.json

# Three replicas behind the client library's round_robin at concurrency 64, one SIGKILLed mid-run
# and restarted on its port; counts every call's outcome and time (reports/kill/). CI runs the
# quick plan on the tiny model (tests/test_replica_kill.py).
kill-test: $(STAMP)
	$(BIN)/python -m bench.replica_kill --json-out reports/kill/kill.json

# The queue under a model that turns 10x slower mid-load, and back: refusals, deadlines,
# recovery; first the server without deadline-aware admission, for comparison (3 to 6 minutes).
slowdown: $(STAMP)
	$(BIN)/python -m bench.slowdown --baseline --json-out reports/slowdown/slowdown.json

# Explain's faithfulness (comprehensiveness, completeness) on 500 test reviews: about 5 minutes.
explain-eval: $(STAMP)
	$(BIN)/python -m bench.explain_faithfulness --data $(DATA) --reviews 500

# Explain's latency in process and through a server, and Predict's p99 under an Explain flood.
explain-bench: $(STAMP)
	$(BIN)/python -m bench.explain_speed --data $(DATA)

# The docs site (mkdocs.yml, docs/) into site/. --strict: a broken link, a page missing from
# the nav, a failed generator (docs/gen/: the reference parts, from the code and the shipped
# model) or any other warning fails the build.
.PHONY: docs docs-serve
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
