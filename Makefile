# winml-dynify: `make demo` and `make test` work on a fresh clone with Python >= 3.10.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_MODEL := fixtures/bert_tiny/s0_batch1_seq16.onnx
DEMO_AXES := --axis input_ids:0=batch --axis input_ids:1=seq --axis attention_mask:0=batch \
	--axis attention_mask:1=seq --axis token_type_ids:0=batch --axis token_type_ids:1=seq

.PHONY: install demo test test-large lint bench fixtures derived eval clean

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
	$(BIN)/pytest -q -m "not large and not derived_full"

test-large: install
	$(BIN)/pytest -q -m large

lint: install
	$(BIN)/ruff check winml_dynify tests bench fixtures/make_inputs.py

bench: install
	$(BIN)/python bench/bench.py

eval: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python ../shared/eval/run_eval.py --tool winml-dynify

# Regenerates fixtures/ with torch + transformers (several GB; not needed for demo or test).
fixtures:
	$(PYTHON) -m venv .venv-fixtures
	.venv-fixtures/bin/pip install -q -e '.[fixtures]'
	.venv-fixtures/bin/python fixtures/make_fixtures.py
	.venv-fixtures/bin/python fixtures/vision/make_vision_fixtures.py
	.venv-fixtures/bin/python fixtures/make_derived.py

# The derived fixtures (onnxruntime-optimised, float16, QDQ, version-converted) make test leaves out.
derived: install
	$(BIN)/pytest -q -m derived_full tests/test_derived.py

clean:
	rm -rf $(VENV) out .pytest_cache
