# The inference service image. Build arguments keep it buildable both where a registry answers
# (the defaults: the wheels from the index) and offline: scripts/images.sh passes the local base and
# PIP_ARGS pointing pip at the locked wheels the host downloaded and checked (build/wheelhouse), served on
# 127.0.0.1 to this build (docker build --network host), so the wheels never become a layer of the image.
# The service without a model: fleet/inference:base. `fleet build` puts a model package on it, the demo's
# fleet/inference:1 and :2 included (scripts/images.sh). LOCK=services/inference/requirements-cuda.lock
# makes the same service on torch's CUDA build: fleet/inference:cuda-base (scripts/images.sh cuda).
ARG BASE=python:3.11-slim
FROM ${BASE} AS service
ARG PIP_ARGS=""
ARG LOCK=services/inference/requirements.lock
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
COPY ${LOCK} /tmp/requirements.lock
# Exactly the locked wheels, each checked against its sha256 (scripts/lock-requirements.sh). Then the
# parts of torch the service never loads (C++ headers, test binaries and libraries, protoc): about 190 MB.
# torch/bin/torch_shm_manager stays: `import torch` looks for it.
RUN python3 -m venv /opt/venv \
 && pip install --no-cache-dir --require-hashes --no-deps ${PIP_ARGS} -r /tmp/requirements.lock \
 && torch=$(echo /opt/venv/lib/python3*/site-packages/torch) \
 && rm -rf "$torch/include" "$torch/test" "$torch"/lib/lib*test*.so "$torch/lib/libaoti_custom_ops.so" \
      "$torch/lib/libbackend_with_compiler.so" \
 && find "$torch/bin" -type f ! -name torch_shm_manager -delete \
 && rm -rf /root/.cache \
 && (getent passwd fleet >/dev/null || useradd --system --uid 10001 --no-create-home fleet)
COPY services/inference/fleet_inference /app/fleet_inference
# what fleet and the replicas agree on (knobs, Consul keys, token and TLS helpers): the same module fleet runs
COPY fleet_protocol /app/fleet_protocol
WORKDIR /app
ENV MODEL_PATH=/models/package FLEET_PORT=8000 FLEET_ADMIN_PORT=8001 PYTHONPATH=/app
USER fleet
EXPOSE 8000 8001
# Healthy means ready (or degraded): Swarm's start-first update and rollback wait on it. The start
# period covers model loading; the stack file tunes these values per deployment.
HEALTHCHECK --interval=2s --timeout=5s --start-period=40s --retries=3 CMD ["python3", "-I", "-S", "/app/fleet_inference/healthcheck.py"]
STOPSIGNAL SIGTERM
CMD ["python3", "-m", "fleet_inference"]
