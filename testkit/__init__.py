"""What the tests and the benchmarks share: synthetic photos, hostile inputs, the real lab
started as processes (``LabStack``), a PostgreSQL server of their own. Never imported by the
lab itself."""
