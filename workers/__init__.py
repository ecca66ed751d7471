"""Example Celery workers for celery-pushserver: ``celery -A workers worker -E``."""

from .app import app

__all__ = ["app"]
