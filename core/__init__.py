"""The lab's shared core, used by the web process and the workers alike: settings, the run
store and its schema migrations, the runs service that owns every run's life, and the event
bus that carries live events to the web process."""
