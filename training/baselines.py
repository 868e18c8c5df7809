"""The bag-of-words baseline every model is reported beside: TF-IDF + logistic regression."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from training import data as imdb
from training.metrics import classification_metrics

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


def tfidf_classifier() -> Pipeline:
    """TF-IDF (uni+bigram) features into logistic regression: the baseline, unfitted."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def clean(text: str) -> str:
        return re.sub(r"<br\s*/?>", " ", text)

    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2), min_df=2, max_df=0.95, sublinear_tf=True, preprocessor=clean
    )
    return make_pipeline(vectorizer, LogisticRegression(C=4.0, max_iter=1000))


def tfidf_baseline(train: imdb.Split, test: imdb.Split) -> dict:
    """TF-IDF (uni+bigram) + logistic regression, trained on train, scored on test."""
    classifier = tfidf_classifier().fit(train.texts, train.labels)
    scores = classifier.predict_proba(test.texts)[:, 1]
    return classification_metrics(test.labels, scores, 0.5)
