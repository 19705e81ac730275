"""The Celery app and its tasks: a worker trains queued runs through ``ml.train`` and reports
them to the runs service (:mod:`core.run_service`)."""
