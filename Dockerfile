# tickstream: the service image. Build: docker build -t tickstream .
# Run alone (embedded Redis, default model, data in the volume):
#   docker run -p 8000:8000 -v tickstream-data:/data tickstream
# With a real Redis and a synthetic feeder: docker compose --profile feed up
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY models models
COPY service service
COPY bench bench
# The README's install command, minus the editable/test extras a developer adds. A C
# compiler builds service/_resp.c (the stream reader's scan), then goes.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

# Non-root; /data holds the embedded Redis (when no TICKSTREAM_REDIS_URL) and the model.
RUN useradd --create-home --uid 10001 tickstream \
    && mkdir /data && chown tickstream:tickstream /data
USER tickstream
ENV TICKSTREAM_DATA_DIR=/data \
    TICKSTREAM_HOST=0.0.0.0 \
    TICKSTREAM_PORT=8000
VOLUME ["/data"]
EXPOSE 8000

# First start trains the default model (a minute or two): hence the long start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TICKSTREAM_PORT', '8000'), timeout=4)"]

CMD ["tickstream", "serve", "--host", "0.0.0.0"]
