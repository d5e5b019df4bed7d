"""Test material trained here: the shape detectors and segmenter, the Keras models, the photo classifiers.

Training code, so it lives beside the tests and never in the wheel a device installs. Importable as
``tests.material`` from the repository root (pytest, ``python -m benchmarks.demo``; benchmark scripts put
the root on ``sys.path``).
"""
