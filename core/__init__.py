"""The lab's shared core, used by the web process and the workers alike: settings, the run
store and its schema migrations, the runs service that owns every run's life, and the event
bus that carries live events to the web process."""

import logging

# Alembic (core.schema) says at INFO what it loads, as it is imported, and what it assumes,
# on every start of every process: noise in the lab's logs. Its warnings and errors show.
logging.getLogger("alembic").setLevel(logging.WARNING)
