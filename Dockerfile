# One image for every part of gpulab: api, dispatcher, worker and migrate differ only by command
# (see docker-compose.yml). python:3.11-slim is enough for GPU workers too: the torch wheel
# carries its own CUDA libraries, and the NVIDIA container runtime mounts the driver (libcuda,
# libnvidia-ml) into a container that reserves a GPU.

FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# A virtual environment is the one folder the runtime stage copies: no sources, no build files.
RUN python -m venv /opt/gpulab
ENV PATH=/opt/gpulab/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY worker ./worker
COPY jobs ./jobs
COPY migrations ./migrations
RUN pip install --no-cache-dir .


FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/gpulab/bin:$PATH \
    GPULAB_STATE_DIR=/var/lib/gpulab \
    GPULAB_ARTIFACTS_DIR=/var/lib/gpulab/artifacts
# What the NVIDIA runtime mounts from the driver: NVML (utility) and CUDA (compute), no more.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility

# A fixed uid so that artifacts on a shared filesystem have one owner across servers. The
# artifacts and bundles folders exist in the image so fresh named volumes mounted there take
# their owner. (Workers run as root in docker-compose.yml, to run commands as members.)
RUN groupadd --system --gid 10001 gpulab \
    && useradd --system --uid 10001 --gid gpulab --home-dir /var/lib/gpulab --create-home \
       --shell /usr/sbin/nologin gpulab \
    && mkdir -p /var/lib/gpulab/artifacts /var/lib/gpulab/bundles \
    && chown -R gpulab:gpulab /var/lib/gpulab

COPY --from=build /opt/gpulab /opt/gpulab

# Numeric, so a runtime that checks for a non-root user need not resolve the name.
USER 10001:10001
WORKDIR /var/lib/gpulab
EXPOSE 8000

CMD ["gpulab", "api", "--host", "0.0.0.0"]
