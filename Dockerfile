# dify-bridge container: slim Python, non-root, read-only-root friendly.
FROM python:3.11-slim AS build
WORKDIR /src
# The dependencies first, in a layer of their own: it is rebuilt only when pyproject.toml
# changes, never for a code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir --prefix=/install -r requirements.txt
# Then the code alone (its dependencies are already installed above).
COPY README.md ./
COPY app ./app
COPY adapters ./adapters
RUN pip install --no-cache-dir --no-deps --prefix=/install .

FROM python:3.11-slim
# No BRIDGE_CONFIG here: unset, serve reads /app/config/bridge.yaml when it exists (mount it)
# and otherwise answers with one default route; a BRIDGE_CONFIG that is set must exist.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=3000 \
    REDIS_DATA_DIR=/data/redis
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin bridge \
    && mkdir -p /app/config /data/redis \
    && chown -R bridge /data
WORKDIR /app
COPY config/bridge.example.yaml /app/config/bridge.example.yaml
# `dify-bridge manifest ...` reads the Slack manifest and Teams package from here.
COPY manifests /app/manifests
USER 10001
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os,urllib.request,sys; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"3000\")}/healthz', timeout=2); sys.exit(0)" || exit 1
ENTRYPOINT ["dify-bridge"]
CMD ["serve"]
