"""Data functions that break `data=custom`'s contract, one way each (tests/test_custom.py)."""

import numpy as np


def a_string():
    return "not data"


def lengths_differ():
    return np.zeros((10, 3)), np.zeros(9)


def nan_rows():
    x = np.random.default_rng(0).normal(size=(60, 3))
    x[[4, 7]] = np.nan
    return x, np.arange(60) % 2


def one_class():
    return np.random.default_rng(0).normal(size=(60, 3)), np.zeros(60)


def words_as_features():
    return np.array([["a", "b"]] * 60, dtype=object), np.arange(60) % 2


def digit_images():
    """scikit-learn's digits as (rows, 1, 8, 8) images with their labels as strings."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images[:, None], np.array([f"digit-{d}" for d in bunch.target])
