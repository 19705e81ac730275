"""The web process: HTTP pages (one blueprint a tab), the JSON API (``dashboard.api``) and the
live Socket.IO channel (``dashboard.live``), built by :func:`dashboard.app.create_app`.

It reads and changes runs only through the runs service (``core.run_service``) and never
imports TensorFlow at start-up (Predict loads it with the first photo).
"""
