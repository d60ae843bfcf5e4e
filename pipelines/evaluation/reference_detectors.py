"""Simple baselines reported beside every detector: IsolationForest, PCA reconstruction and a rolling z-score.

They see what the detectors see (the same windows, images or text vectors, in the same units) and go through
the same calibration, so a table compares the models, not their inputs or thresholds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BASELINES = ("isolation_forest", "pca", "rolling_z")


def _flat(samples: np.ndarray) -> np.ndarray:
    return np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)


def isolation_forest_scores(train: np.ndarray, test: np.ndarray, seed: int = 0) -> np.ndarray:
    """Anomaly score (higher = more anomalous) of an IsolationForest fitted on `train` (100 trees)."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=100, random_state=seed).fit(_flat(train))
    return -forest.score_samples(_flat(test))


def pca_scores(train: np.ndarray, test: np.ndarray, components: int = 10) -> np.ndarray:
    """Squared reconstruction error of flattened samples under a PCA (10 components) fitted on `train`.

    The samples are used as they come (per-entity units, images in [0, 1]): standardising each element
    would blow up the noise of near-constant ones and make the baseline weaker than it is.
    """
    from sklearn.decomposition import PCA

    flat_train, flat_test = _flat(train), _flat(test)
    pca = PCA(n_components=min(components, *flat_train.shape), random_state=0).fit(flat_train)
    return np.square(pca.inverse_transform(pca.transform(flat_test)) - flat_test).sum(axis=1)


def rolling_z_scores(values: pd.DataFrame, window: int) -> np.ndarray:
    """Largest |z| over features of each row against the mean and spread of the `window` rows before it.

    `values`: one entity's rows in time order (one column per feature). The first rows, with fewer than two
    earlier rows, score 0.
    """
    history = values.rolling(window, min_periods=2)
    mean, std = history.mean().shift(1), history.std().shift(1)
    z = (values - mean).abs() / std.where(std > 0)
    return z.max(axis=1).fillna(0.0).to_numpy()


def tfidf_vectors(train: np.ndarray, test: np.ndarray):
    """TF-IDF vectors of texts (a vocabulary fitted on `train`): the text baselines' input."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer().fit(train)
    return vectorizer.transform(train), vectorizer.transform(test)


def text_pca_scores(train: np.ndarray, test: np.ndarray, components: int = 50) -> np.ndarray:
    """Reconstruction error of TF-IDF vectors under a truncated SVD fitted on `train` (PCA for sparse text)."""
    from sklearn.decomposition import TruncatedSVD

    x_train, x_test = tfidf_vectors(train, test)
    svd = TruncatedSVD(n_components=min(components, x_train.shape[1] - 1), random_state=0).fit(x_train)
    return np.asarray(np.square(x_test.toarray() - svd.inverse_transform(svd.transform(x_test))).sum(axis=1))


def text_isolation_forest_scores(train: np.ndarray, test: np.ndarray, seed: int = 0) -> np.ndarray:
    """IsolationForest on TF-IDF vectors."""
    from sklearn.ensemble import IsolationForest

    x_train, x_test = tfidf_vectors(train, test)
    return -IsolationForest(n_estimators=100, random_state=seed).fit(x_train).score_samples(x_test)
