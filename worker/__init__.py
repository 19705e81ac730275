"""Celery worker that runs ``ml.train`` for queued runs: built in a later issue."""
