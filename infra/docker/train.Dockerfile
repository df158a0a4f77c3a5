# Training image: the flows (AutoML, monitor, retrain), TensorFlow and PyTorch with CUDA, the
# relay. Runs as the Prefect Kubernetes work pool's Jobs on the GPU nodes.
#   docker build -f infra/docker/train.Dockerfile -t ghcr.io/mnist-continual/train:<sha> .
# Not built here (no Docker engine on the development machine); CI builds it.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv git \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/mnist-continual
COPY pyproject.toml README.md ./
COPY mnistcl mnistcl
COPY cli cli
COPY models models
COPY validation validation
COPY retraining retraining
COPY deployment deployment
COPY scenario scenario
COPY flows flows
COPY monitoring monitoring
COPY serving serving
COPY configs configs
COPY prefect.yaml prefect.yaml
COPY requirements/main.lock requirements/
# The main environment's lock (make lock), every file checked against its SHA-256, less its two
# CPU-only builds (torch +cpu, tensorflow-cpu); then the CUDA builds of the same versions:
# PyPI's torch 2.13.0 Linux wheel is the CUDA build, and tensorflow[and-cuda] brings TensorFlow's
# CUDA libraries. Those two and their nvidia-* wheels are the one step not hash-locked: the
# package mirror of the development machine has no GPU build of tensorflow 2.21.0 to resolve a
# lock from (`pip install --dry-run --report ... "tensorflow[and-cuda]==2.21.0"` finds none);
# CI, with PyPI, can lock them (docs/testing.md).
RUN pip install --upgrade "pip>=24" \
 && awk '/^(torch|tensorflow_cpu)==/ {skip = 1} skip && !/\\$/ {skip = 0; next} !skip' requirements/main.lock \
      > /tmp/main-gpu.lock \
 && pip install --require-hashes --no-deps -r /tmp/main-gpu.lock \
 && pip install --no-deps -e . \
 && pip install "torch==2.13.0" "tensorflow[and-cuda]==2.21.0" \
 && python -c "import torch, tensorflow, prefect, evidently; print('torch', torch.__version__, 'tf', tensorflow.__version__)"

RUN useradd --uid 10001 --create-home mnistcl
USER 10001
# The home is scratch only (caches, a check's working copy, W&B runs until they are copied to the
# bucket); the flow Jobs mount an emptyDir here. Every piece of state lives in S3 and PostgreSQL
# (docs/architecture.md, "Where state lives"), and the settings refuse to run otherwise.
ENV MNISTCL_HOME=/home/mnistcl/scratch MNISTCL_REQUIRE_SHARED_STATE=true
CMD ["mnistcl", "--help"]
