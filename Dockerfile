# syntax=docker/dockerfile:1
# The pipeline's image: the `pipeline` command (executor, migrate, simulate, ...) for docker-compose.yml.
#
# Stage `build` installs the dependencies from requirements.lock only (every version pinned, every file
# checked against its sha256; wheels only, nothing compiled), then the project itself with --no-deps and
# no index, so nothing unpinned can slip in; `pip check` proves the set complete. The runtime stage copies
# that virtual environment and runs as an unprivileged user that owns no file in the image.
# Regenerate the lock after changing dependencies in pyproject.toml (tests/test_compose.py checks it):
#   pip-compile --generate-hashes --allow-unsafe --strip-extras --build-deps-for wheel \
#     --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --require-hashes --only-binary :all: --no-deps -r /tmp/requirements.lock
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY executor ./executor
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-index . \
 && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 pipeline \
 && useradd --system --uid 10001 --gid pipeline --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin pipeline
COPY --from=build /opt/venv /opt/venv
# sql/ for `pipeline migrate apply --sql-dir /app/sql`, and the example site for a first start.
COPY sql /app/sql
COPY examples /app/examples
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
USER 10001:10001
EXPOSE 9000
ENTRYPOINT ["pipeline"]
CMD ["--help"]
