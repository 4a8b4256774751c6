#!/usr/bin/env bash
# Install the peer implementation, magvit2-pytorch 0.5.1, into a plain folder for the parity
# tests and benchmarks:   bash scripts/install_peer.sh PYTHON TARGET   (make peer: TARGET=.peer)
#
# The peer's own dependency list pulls torch, torchvision and opencv-python: a plain resolution
# would install a multi-GB CUDA torch, and the PyPI torchvision does not import beside the CPU
# torch build magtok uses. So everything is installed with --no-deps from the exact pinned set
# below, which is what `import magvit2_pytorch` (tokenizer and trainer modules) really needs on
# top of the magtok venv. torch, accelerate, einops, numpy, pillow, safetensors, sympy and
# typing_extensions come from the venv and are never installed here; torchvision and cv2 are
# replaced by stubs at import time (magtok/testing/peer.py), x-transformers and optree are
# declared by the peer / pytorch-custom-utils but never imported, so they are left out.
#
# Idempotent: does nothing when TARGET already holds this exact set and imports; otherwise it
# installs into a fresh sibling folder, checks it, and swaps it in. Fails loudly on any error.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 PYTHON TARGET   (e.g. $0 .venv/bin/python .peer)" >&2
    exit 2
fi
PY=$1
TARGET=${2%/}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")

PACKAGES=(
    magvit2-pytorch==0.5.1
    vector-quantize-pytorch==1.32.0
    taylor-series-linear-attention==0.2.0
    gateloop-transformer==0.2.5
    rotary-embedding-torch==0.9.1
    torch-einops-utils==0.2.0
    einx==0.4.3
    frozendict==2.5.1
    loguru==0.7.3
    jaxtyping==0.3.11
    wadler-lindig==0.1.8
    beartype==0.23.1
    kornia==0.9.0
    kornia-rs==0.2.0
    ema-pytorch==0.8.3
    pytorch-warmup==0.2.0
    pytorch-custom-utils==0.0.21
)
# top-level names that must never end up in TARGET (they come from the venv or are stubbed)
FORBIDDEN=(torch torchvision torchaudio cv2 nvidia triton numpy einops accelerate PIL safetensors sympy typing_extensions)

STAMP_NAME=.magtok-peer-requirements.txt
WANT=$(printf '%s\n' "${PACKAGES[@]}")

command -v "$PY" >/dev/null 2>&1 || [ -x "$PY" ] || { echo "install_peer.sh: python '$PY' not found" >&2; exit 1; }
"$PY" -c "import torch, einops, numpy, accelerate, PIL, safetensors" || {
    echo "install_peer.sh: $PY lacks torch/einops/numpy/accelerate/pillow/safetensors (run make venv first)" >&2
    exit 1
}

# imports the peer from folder $1 exactly as the tests do (stubs for torchvision / cv2)
check_import() {
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" MAGTOK_PEER_DIR="$1" "$PY" -W ignore -c "
import sys
from magtok.testing.peer import import_peer
m = import_peer()
import magvit2_pytorch.trainer, magvit2_pytorch.version as v
assert v.__version__ == '0.5.1', v.__version__
assert m.__file__.startswith(sys.argv[1]), m.__file__
" "$(cd "$1" && pwd -P)"
}

if [ -f "$TARGET/$STAMP_NAME" ] && [ "$(cat "$TARGET/$STAMP_NAME")" = "$WANT" ] && check_import "$TARGET" 2>/dev/null; then
    echo "peer already installed in $TARGET (magvit2-pytorch 0.5.1, ${#PACKAGES[@]} pinned packages)"
    exit 0
fi

start=$(date +%s)
mkdir -p "$(dirname "$TARGET")"
TMP=$(mktemp -d "$TARGET.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

echo "installing magvit2-pytorch 0.5.1 and ${#PACKAGES[@]} pinned packages (no dependency resolution) into $TARGET"
"$PY" -m pip install --disable-pip-version-check --quiet --no-deps --only-binary=:all: \
    --no-warn-script-location --target "$TMP" "${PACKAGES[@]}"

# einx's wheel ships its repository's test/ and docs/ folders at top level: a `test` package on
# sys.path would shadow the standard library's one
rm -rf "$TMP/test" "$TMP/docs" "$TMP/bin"

for name in "${FORBIDDEN[@]}"; do
    if [ -e "$TMP/$name" ] || [ -e "$TMP/$name.py" ] || compgen -G "$TMP/$name-*.dist-info" >/dev/null; then
        echo "install_peer.sh: '$name' ended up in $TARGET; it must come from the venv" >&2
        exit 1
    fi
done
if compgen -G "$TMP/nvidia*" >/dev/null || compgen -G "$TMP/opencv*" >/dev/null || compgen -G "$TMP/pillow-*" >/dev/null; then
    echo "install_peer.sh: nvidia / opencv / pillow packages ended up in $TARGET" >&2
    exit 1
fi

n_dist=$(find "$TMP" -maxdepth 1 -name '*.dist-info' | wc -l)
if [ "$n_dist" -ne "${#PACKAGES[@]}" ]; then
    echo "install_peer.sh: expected ${#PACKAGES[@]} distributions in $TARGET, found $n_dist" >&2
    exit 1
fi

if ! check_import "$TMP"; then
    echo "install_peer.sh: the freshly installed peer does not import (see above)" >&2
    exit 1
fi

printf '%s\n' "$WANT" >"$TMP/$STAMP_NAME"
rm -rf "$TARGET"
mv "$TMP" "$TARGET"
trap - EXIT
echo "peer installed in $TARGET in $(($(date +%s) - start)) s"
