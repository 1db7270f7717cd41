# Herald image: one image for every process; the command picks the process.
#   docker build -t herald .
#   docker run herald serve campaign        # or tag, audience, delivery, translator (the default)
# Operations guide: docs/operations.md.

# --- build: install the project and its runtime dependencies into a virtualenv -------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1

WORKDIR /src
# uv from the same hash-pinned requirement that `make` bootstraps it from.
COPY tools/uv-requirements.txt ./tools/
RUN pip install --require-hashes --no-deps -r tools/uv-requirements.txt
COPY pyproject.toml uv.lock ./
# gen/ holds the generated gRPC code (package `herald`); pyproject finds packages in "." and "gen".
COPY gen ./gen
COPY services ./services
COPY translator ./translator
# Exactly the runtime packages uv.lock pins (hashes checked), without the dev group: no test or lint
# tools in the image. The project itself is installed as a plain (non-editable) package.
RUN UV_PROJECT_ENVIRONMENT=/opt/herald uv sync --locked --no-dev --no-editable

# --- runtime ------------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/herald/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HERALD_BIND=0.0.0.0 \
    HERALD_DATA_DIR=/home/herald/var

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --create-home --home-dir /home/herald herald

COPY --from=build /opt/herald /opt/herald

USER 10001:10001
WORKDIR /home/herald

# campaign, tag, audience, delivery (gRPC), the translator (HTTP) and the bounce receiver (SMTP).
EXPOSE 50051 50052 50053 50054 8080 2526

ENTRYPOINT ["herald"]
CMD ["serve", "translator"]
