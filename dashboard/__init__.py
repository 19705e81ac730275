"""Flask dashboard (dataset, train, runs and predict tabs, JSON API): built in a later issue.

It calls the ``ml`` library and never imports TensorFlow at start-up.
"""
