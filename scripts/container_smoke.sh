#!/usr/bin/env bash
# Container smoke test without a Docker engine: build the serve-cpu image with buildah (chroot isolation) from an
# offline Debian base, start orpo-serve in it on the tiny model, make a chat completion and scrape /metrics, tear
# down. Prints the build time, the image size and the start-up time; exits non-zero on any failure.
#
#   bash scripts/container_smoke.sh
#
#   IMAGE=localhost/orpo-deploy:serve-cpu   tag to build
#   BASE_IMAGE=localhost/debian:bookworm    base; made with debootstrap + `podman import` when missing
#   DEBIAN_MIRROR=http://deb.debian.org/debian
#   PYTHON=.venv/bin/python                 host interpreter that builds the tiny model (core.models)
#   SKIP_BUILD=1                            reuse IMAGE as it is
#   BUILD_ONLY=1                            stop after the build (e.g. build niced now, smoke-test later)
#   STARTUP_TIMEOUT=300                     seconds allowed from start to /ready
#   NICE=19                                 niceness of the heavy steps (0 on an idle machine: faster, timings real)
# Heavy steps run under `nice -n $NICE`: the machine may be shared.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/orpo-deploy:serve-cpu}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-.venv/bin/python}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-300}
NICE=${NICE:-19}
say() { echo "[smoke] $*"; }
die() { echo "[smoke] error: $*" >&2; exit 1; }

for tool in buildah podman; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y podman buildah debootstrap)"
done
[ -x "$PYTHON" ] || die "$PYTHON not found (run make env, or set PYTHON)"

# ---- base image, made offline from the Debian mirror (no image registry needed)
if ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install -y debootstrap)"
    rootfs=$(mktemp -d)
    say "making $BASE_IMAGE with debootstrap from $DEBIAN_MIRROR"
    nice -n "$NICE" debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >/dev/null
    tar -C "$rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
fi

# ---- build inputs: the torch wheel from pip's find-links, and pip's CA bundle (both git-ignored)
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
mkdir -p wheels
torch_spec=$(sed -n 's/^torch==\(.*\)$/\1/p' requirements/lock-cpu.txt)
for dir in ${PIP_FIND_LINKS:-} $("$PYTHON" -m pip config get global.find-links 2>/dev/null || true); do
    for whl in "$dir"/torch-"$torch_spec"-cp311-*.whl; do
        [ -f "$whl" ] && [ ! -f "wheels/$(basename "$whl")" ] && cp "$whl" wheels/
    done
done
cert=${PIP_CERT:-$("$PYTHON" -m pip config get global.cert 2>/dev/null || true)}
if [ -n "$cert" ] && [ -f "$cert" ]; then
    cp "$cert" ca-bundle.crt
    build_args+=(--build-arg PIP_CERT_FILE=ca-bundle.crt)
fi

# ---- build
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "building $IMAGE (target serve-cpu) from $BASE_IMAGE"
    t0=$(date +%s)
    nice -n "$NICE" buildah bud --isolation chroot --format docker --layers --target serve-cpu \
        "${build_args[@]}" -t "$IMAGE" -f Dockerfile . >"${BUILD_LOG:-/tmp/orpo-container-build.log}" 2>&1 \
        || { tail -30 "${BUILD_LOG:-/tmp/orpo-container-build.log}" >&2; die "build failed (log: ${BUILD_LOG:-/tmp/orpo-container-build.log})"; }
    build_s=$(($(date +%s) - t0))
    say "build time: ${build_s} s"
fi
size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -1)
say "image size: $size ($IMAGE)"
[ "${BUILD_ONLY:-0}" = 1 ] && exit 0

# ---- tiny model on the host (random weights, SmolLM2 tokenizer, built in code), mounted read-only
model_src=$(OMP_NUM_THREADS=1 nice -n "$NICE" "$PYTHON" -c "from orpo_deploy.core.models import resolve_model; print(resolve_model('tiny-smollm2'))")
# The server runs as uid 10001: give it a world-readable copy (cache folders are private to their owner).
model=$(mktemp -d)
cp -r "$model_src"/. "$model"/
chmod -R a+rX "$model"
port=$("$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
key=smoke-$RANDOM$RANDOM

ctr=$(buildah from "$IMAGE")
server_pid=
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM -- "-$server_pid" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$server_pid" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$server_pid" 2>/dev/null || true
    fi
    buildah rm "$ctr" >/dev/null 2>&1 || true
    rm -rf "$model"
}
trap cleanup EXIT
# chroot isolation shares the host's network: the server is reachable on 127.0.0.1:$port.
buildah config --env ORPO_SERVE_PORT="$port" --env ORPO_SERVE_API_KEYS="$key" --env ORPO_SERVE_METRICS_AUTH=1 \
    --env ORPO_SERVE_MAX_MODEL_LEN=512 --env OMP_NUM_THREADS=1 "$ctr"
say "starting orpo-serve in the image on port $port (tiny model mounted at /models/model)"
t0=$(date +%s)
# setsid: the server and its engine process get a process group of their own, which cleanup stops by its id.
setsid nice -n "$NICE" buildah run --isolation chroot --mount "type=bind,source=$model,target=/models/model,ro" \
    "$ctr" -- orpo-serve ${SERVE_ARGS:-} >"${SERVER_LOG:-/tmp/orpo-container-server.log}" 2>&1 &
server_pid=$!

"$PYTHON" - "$port" "$key" "$STARTUP_TIMEOUT" "$server_pid" "$t0" <<'EOF'
import json, os, sys, time, urllib.error, urllib.request

port, key, timeout, pid, t0 = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
base = f"http://127.0.0.1:{port}"


def call(path, body=None, auth=True):
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode())
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, resp.read().decode()


def fail(msg):
    print(f"[smoke] error: {msg}", file=sys.stderr)
    sys.exit(1)


while True:  # /ready turns 200 once the engine is up; until then the port refuses or answers 503
    try:
        if call("/ready", auth=False)[0] == 200:
            break
    except (urllib.error.URLError, ConnectionError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        fail("the server exited before it was ready (see its log)")
    if time.time() - t0 > timeout:
        fail(f"not ready after {timeout:.0f} s")
    time.sleep(1)
print(f"[smoke] start-up to /ready: {time.time() - t0:.0f} s")

try:
    call("/v1/models", auth=False)
    fail("/v1/models answered without an API key")
except urllib.error.HTTPError as exc:
    if exc.code != 401:
        fail(f"/v1/models without a key: {exc.code}, expected 401")
model = json.loads(call("/v1/models")[1])["data"][0]["id"]
body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "temperature": 0}
status, text = call("/v1/chat/completions", body)
answer = json.loads(text)
usage = answer["usage"]
if status != 200 or answer["choices"][0]["message"]["role"] != "assistant" or usage["completion_tokens"] < 1:
    fail(f"unexpected chat completion: {text[:300]}")
print(f"[smoke] chat completion: {usage['completion_tokens']} tokens, finish_reason "
      f"{answer['choices'][0]['finish_reason']}")

metrics = call("/metrics")[1]
needed = ['orpo_serve_requests_total{route="/v1/chat/completions",status="200"} 1.0',
          "orpo_serve_completion_tokens_total", "orpo_serve_time_to_first_token_seconds_count 1.0"]
missing = [m for m in needed if m not in metrics]
if missing:
    fail(f"/metrics lacks {missing}")
print(f"[smoke] /metrics: {len(metrics.splitlines())} lines, the chat request counted")
EOF
say "passed"
