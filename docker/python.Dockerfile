# One image for every Python process of the stack: `pushserver serve`, the
# Celery worker, Celery Beat and Flower. docker-compose.yml picks the command.
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md ./
COPY constraints ./constraints
COPY pushserver ./pushserver
COPY workers ./workers

# The [workers] extra brings Pillow and scikit-learn for the example tasks.
# Flower is not a project dependency: only this image's monitoring service
# needs it, so it is installed here, explicitly. The constraints pin the Celery
# the fault tests run (docs/celery-versions.md: 5.7.0 workers die on a Redis outage).
RUN pip install -c constraints/celery56.txt ".[workers]" "flower>=2.0,<3"

# workers/ is the example app, not part of the installed package: `celery -A
# workers` finds it here, in /app, whatever the working directory.
ENV PYTHONPATH=/app

# Never run as root (Celery warns, and a compromised task should not own the
# container). /data holds what the tasks and Beat write; compose mounts named
# volumes there, which start out with this ownership.
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /data/outbox /data/media /data/reports /data/beat \
    && chown -R app:app /data
USER app

EXPOSE 8000 5555
CMD ["pushserver", "serve", "--host", "0.0.0.0", "--port", "8000"]
