# Agency Gateway: `gateway serve` in a slim image, as a user without privileges.
# Build: docker build -t agency-gateway .
# The workspace (gateway.toml, keys/) is mounted at /srv/gateway; see deploy/ and
# docs/operating.md#deployment.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY plugins ./plugins
COPY schemas ./schemas
RUN python -m venv /opt/gateway \
    && /opt/gateway/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/gateway/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN groupadd --system gateway && useradd --system --gid gateway --home-dir /srv/gateway gateway \
    && mkdir -p /srv/gateway && chown gateway:gateway /srv/gateway
COPY --from=build /opt/gateway /opt/gateway
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GATEWAY_CONFIG=/srv/gateway/gateway.toml \
    GATEWAY_LOG_FORMAT=json
USER gateway
WORKDIR /srv/gateway
EXPOSE 8080 9464
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"
ENTRYPOINT ["gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--log-format", "json"]
