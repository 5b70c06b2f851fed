# winml-dynify: `make demo` and `make test` work on a fresh clone with Python >= 3.10.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_MODEL := fixtures/bert_tiny/s0_batch1_seq16.onnx
DEMO_AXES := --axis input_ids:0=batch --axis input_ids:1=seq --axis attention_mask:0=batch \
	--axis attention_mask:1=seq --axis token_type_ids:0=batch --axis token_type_ids:1=seq

.PHONY: install demo test test-large lint bench fixtures fixtures-tf derived eval fuzz clean downstream winml-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: install
	@mkdir -p out
	$(BIN)/winml-dynify $(DEMO_MODEL) $(DEMO_AXES) -o out/bert_tiny.dynamic.onnx \
		--reference fixtures/bert_tiny/ref_batch3_seq24.onnx --report out/bert_tiny.report.json

test: install
	$(BIN)/pytest -q -n 2 --dist loadgroup -m "not large and not downstream and not derived_full"

test-large: install
	$(BIN)/pytest -q -m large

# onnxruntime's quantization, symbolic shape inference, transformer optimizer and make_dynamic_shape_fixed
# on dynified fixtures (a few minutes).
downstream: install
	$(BIN)/pytest -q -m downstream tests/test_downstream.py

# The long fuzz campaign, then the ONNX backend node tests as a corpus (from an onnx wheel that still
# ships them, downloaded into a temporary folder; never part of `make test`).
FUZZ_EXAMPLES ?= 3000
BACKEND_ONNX ?= onnx==1.16.2
fuzz: install
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/test_fuzz.py --hypothesis-show-statistics
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$(BIN)/pip download -q --no-deps --only-binary=:all: -d "$$tmp" '$(BACKEND_ONNX)' && \
		$(BIN)/python -m zipfile -e "$$tmp"/onnx-*.whl "$$tmp/wheel" && \
		$(BIN)/python tests/backend_corpus.py "$$tmp/wheel/onnx/backend/test/data/node"

# winml-cli's own tools (analyze, optimize, quantize, perf, eval) on a dynified `winml export`, next to
# winml's static export and its --dynamic-axes re-export. winml-cli pins onnx 1.18: it gets its own venv
# (torch and transformers included, several GB); tiny checkpoints are built locally, nothing is downloaded.
WINML_VENV ?= .venv-winml
winml-check: install $(WINML_VENV)/.installed
	$(WINML_VENV)/bin/python bench/winml_check.py --dynify $(CURDIR)/$(BIN)/winml-dynify

$(WINML_VENV)/.installed:
	$(PYTHON) -m venv $(WINML_VENV)
	$(WINML_VENV)/bin/pip install -q --upgrade pip
	$(WINML_VENV)/bin/pip install -q "winml-cli==0.4.0" "transformers>=4.57,<4.58" "optimum==2.1.0" \
		"optimum-onnx==0.1.0" onnxruntime
	touch $@

lint: install
	$(BIN)/ruff check winml_dynify tests bench fixtures/make_inputs.py fixtures/make_tf_fixtures.py

# Fast by default (tiny fixtures, a 10k-node graph: a few minutes). BENCH_FULL=1 adds real-size models
# (exported with torch from BENCH_TORCH_PYTHON, default .venv-fixtures/bin/python; skipped without it),
# a 2.7 GB external-data decoder and 100k/1M-node graphs. Figures: docs/BENCHMARKS.md.
bench: install
	$(BIN)/python bench/bench.py

eval: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python ../shared/eval/run_eval.py --tool winml-dynify

# Regenerates fixtures/ with torch + transformers (several GB; not needed for demo or test).
fixtures: fixtures-tf
	$(PYTHON) -m venv .venv-fixtures
	.venv-fixtures/bin/pip install -q -e '.[fixtures]'
	.venv-fixtures/bin/python fixtures/make_fixtures.py
	.venv-fixtures/bin/python fixtures/make_kv_fixtures.py
	.venv-fixtures/bin/python fixtures/vision/make_vision_fixtures.py
	.venv-fixtures/bin/python fixtures/make_derived.py

# The derived fixtures (onnxruntime-optimised, float16, QDQ, version-converted) make test leaves out.
derived: install
	$(BIN)/pytest -q -m derived_full tests/test_derived.py

# The tf2onnx fixtures: tensorflow pins its own numpy, so they get a venv of their own.
fixtures-tf:
	$(PYTHON) -m venv .venv-tf
	.venv-tf/bin/pip install -q tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnxruntime
	.venv-tf/bin/python fixtures/make_tf_fixtures.py

clean:
	rm -rf $(VENV) out .pytest_cache
