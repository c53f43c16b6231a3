# commentflow worker / dashboard / producer image.
#
# commentflow is installed as an application, into its own venv (/opt/commentflow), never into
# the system site-packages: its wheel installs the top-level packages model, schemas, workers and
# streamer, names that would clash with anything else installed beside them.
#
#   docker build -t commentflow:latest .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t commentflow:gpu .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/commentflow \
    PATH=/opt/commentflow/bin:$PATH

RUN python -m venv /opt/commentflow

# torch FIRST and pinned: installed after the project, pip would pull the default (multi-GB CUDA)
# build. The CPU index keeps the image small; GPU builds swap the index (a CUDA wheel index of
# the same torch version) with --build-arg TORCH_INDEX_URL=...
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN /opt/commentflow/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

# opencv (pulled by rapidocr, the OCR of the multimodal model) needs libGL and glib at import.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Only what the wheel needs (the build context also holds .venv and caches).
COPY pyproject.toml README.md ./
COPY commentflow ./commentflow
COPY streamer ./streamer
COPY workers ./workers
COPY model ./model
COPY schemas ./schemas
# The runtime dependencies only: no dev extras (pytest, ruff, playwright ...).
RUN /opt/commentflow/bin/pip install . && rm -rf build *.egg-info

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
