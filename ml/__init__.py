"""Kitten-and-Puppy Lab's pure ML library: scan, pipeline, recipes, train, evaluate, predict.

It imports neither Flask, Celery nor Redis, and TensorFlow only inside the functions that
need it, so importing ``ml`` is cheap for the web process. Label 0 = dog, 1 = cat
(``ml.data.CLASS_NAMES``).
"""
