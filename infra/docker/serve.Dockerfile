# Serving image: the Seldon Core 1.17.1 Python wrapper (Apache-2.0) and ONNX Runtime only; no
# TensorFlow, PyTorch or Prefect. The SeldonDeployment runs `python -m serving.server`.
#   docker build -f infra/docker/serve.Dockerfile -t ghcr.io/mnist-continual/serving:<sha> .
# Not built here (no Docker engine on the development machine); CI builds it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/mnist-continual
COPY requirements/serve.lock requirements/
# The serving environment's lock (make lock): every file checked against its SHA-256, nothing
# resolved at build time; it holds seldon-core's pins with the patched gunicorn / Werkzeug / Flask
# over them (CVE-2024-1135; serving/requirements-patched.txt), exactly as .venv-serve has them.
RUN pip install --require-hashes --no-deps -r requirements/serve.lock \
 && python -c "import seldon_core.wrapper, onnxruntime, gunicorn; print('gunicorn', gunicorn.__version__)"
COPY serving serving
COPY mnistcl/__init__.py mnistcl/credentials.py mnistcl/onnx_utils.py mnistcl/predlog.py mnistcl/logwrites.py mnistcl/registry.py mnistcl/storage.py mnistcl/images.py mnistcl/
RUN useradd --uid 10001 --no-create-home mnistcl
USER 10001
EXPOSE 9000 6000
CMD ["python", "-m", "serving.server", "--host", "0.0.0.0", "--port", "9000", "--metrics-port", "6000"]
