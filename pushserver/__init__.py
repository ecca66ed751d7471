"""celery-pushserver: Celery task events pushed to browsers over Socket.IO."""

__version__ = "0.1.0"
