"""The TF-IDF teacher's out-of-fold scores and the soft targets built from them."""

import random

import numpy as np
import pytest

from tests.imdb_fixture import review
from training import teacher


def test_soft_targets_mix_label_and_teacher():
    labels = np.array([0, 1, 1])
    scores = np.array([0.8, 0.2, 0.9], dtype=np.float32)
    np.testing.assert_allclose(
        teacher.soft_targets(labels, scores, 0.25), [0.2, 0.8, 0.975], rtol=1e-6
    )
    np.testing.assert_array_equal(teacher.soft_targets(labels, scores, 0.0), labels)


@pytest.mark.parametrize("weight", [-0.1, 0.6, 1.0])
def test_a_weight_out_of_range_is_refused(weight):
    with pytest.raises(ValueError, match=r"in \[0, 0.5\]"):
        teacher.soft_targets(np.array([1]), np.array([0.0]), weight)


def test_out_of_fold_scores_learn_the_cues():
    rng = random.Random(0)
    labels = np.array([i % 2 for i in range(200)])
    texts = [review(rng, bool(label)) for label in labels]
    scores = teacher.out_of_fold_scores(texts, labels, seed=0)
    assert scores.shape == (200,) and scores.dtype == np.float32
    assert np.mean((scores >= 0.5) == labels) > 0.95


def test_no_review_is_scored_by_a_teacher_that_saw_it():
    # Random words, random labels: a teacher scoring its own training reviews
    # memorises them (near 100% right); scored out of fold it is at chance.
    rng = np.random.default_rng(0)
    vocabulary = [f"word{i}" for i in range(300)]
    texts = [" ".join(rng.choice(vocabulary, size=40)) for _ in range(300)]
    labels = rng.integers(0, 2, size=300)
    in_sample = teacher.tfidf_classifier().fit(texts, labels).predict_proba(texts)[:, 1]
    assert np.mean((in_sample >= 0.5) == labels) > 0.95
    scores = teacher.out_of_fold_scores(texts, labels, seed=0)
    assert np.mean((scores >= 0.5) == labels) < 0.65


def test_no_review_is_scored_by_a_teacher_that_saw_its_movie():
    # 60 "movies" of 5 reviews: each movie's reviews share its name and its (random) label,
    # and nothing else carries the label. A teacher that saw other reviews of a movie
    # reads the label off the name; with whole movies held out it is at chance.
    rng = np.random.default_rng(1)
    movie_labels = rng.integers(0, 2, size=60)
    noise = [f"word{i}" for i in range(200)]
    movies = np.repeat(np.arange(60), 5)
    texts = [f"movie{m} movie{m} " + " ".join(rng.choice(noise, size=20)) for m in movies]
    labels = movie_labels[movies]
    single_reviews = teacher.out_of_fold_scores(texts, labels, seed=0)
    assert np.mean((single_reviews >= 0.5) == labels) > 0.9  # the leak the groups close
    whole_movies = teacher.out_of_fold_scores(texts, labels, seed=0, groups=movies)
    assert np.mean((whole_movies >= 0.5) == labels) < 0.7
