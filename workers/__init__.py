"""The example Celery app of celery-pushserver, run from the checkout: ``celery -A workers worker -E``.

Not part of the installed package: it uses ``pushserver.worker`` as your own app would.
"""

from .app import app

__all__ = ["app"]
