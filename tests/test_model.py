"""ServingModel: which version loads, clear loading errors, and batched == unbatched scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from server.errors import InvalidReviewError, ModelLoadError, StartupError
from server.scoring.model import (
    TOKENIZE_PART_ROWS,
    ServingModel,
    find_latest_version,
    flatten_metrics,
)
from tests.helpers import REVIEWS


def copy_version(source_dir: Path, target_dir: Path, version: int) -> Path:
    """Copies the tiny model's version 1 as `version`, metadata included."""
    shutil.copytree(source_dir / "1", target_dir / str(version))
    metadata_path = target_dir / str(version) / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata_path.write_text(json.dumps({**metadata, "version": version}))
    return target_dir / str(version)


def test_loads_the_highest_complete_integer_version(tiny_model_dir, tmp_path):
    copy_version(tiny_model_dir, tmp_path, 2)
    copy_version(tiny_model_dir, tmp_path, 10)  # 10 > 2: compared as numbers, not names
    (tmp_path / "11").mkdir()  # incomplete: no metadata.json yet
    (tmp_path / "11" / "model.keras").write_bytes(b"half written")
    shutil.copytree(tmp_path / "10", tmp_path / "latest")  # not an integer: ignored

    assert find_latest_version(tmp_path).version == 10
    model = ServingModel.load_latest(tmp_path, device="cpu")
    assert (model.version, model.name, model.preset, model.maxlen) == (10, "imdb-lstm", "tiny", 40)
    assert model.device == "/CPU:0"
    assert model.metrics["test.roc_auc"] == 0.5
    assert model.decision_threshold == 0.5


def test_missing_model_dir_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match=f"{tmp_path / 'nowhere'} does not exist"):
        ServingModel.load_latest(tmp_path / "nowhere")


def test_model_dir_without_versions_says_what_it_expected(tmp_path):
    (tmp_path / "draft").mkdir()
    (tmp_path / "3").mkdir()  # no metadata.json: incomplete
    with pytest.raises(
        ModelLoadError, match="no complete model version in .*model.keras and metadata.json"
    ):
        ServingModel.load_latest(tmp_path)


def test_a_version_folder_given_as_model_dir_points_at_its_parent(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="point at its parent"):
        ServingModel.load_latest(tiny_model_dir / "1")


def test_a_file_that_is_not_a_model_gives_a_clear_message(tiny_model_dir, tmp_path):
    version_dir = copy_version(tiny_model_dir, tmp_path, 1)
    (version_dir / "model.keras").write_bytes(b"this is not a Keras model")
    with pytest.raises(ModelLoadError, match=r"model file .*1/model.keras is not a .keras archive"):
        ServingModel.load_latest(tmp_path)


def test_bad_metadata_is_named(tiny_model_dir, tmp_path):
    version_dir = copy_version(tiny_model_dir, tmp_path, 4)
    metadata = json.loads((version_dir / "metadata.json").read_text())
    (version_dir / "metadata.json").write_text(json.dumps({**metadata, "version": 5}))
    with pytest.raises(ModelLoadError, match="says version 5 but sits in folder 4"):
        ServingModel.load_latest(tmp_path)
    (version_dir / "metadata.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read .*metadata.json"):
        ServingModel.load_latest(tmp_path)


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a GPU is present")
def test_gpu_requested_without_a_gpu_is_a_startup_error(tiny_model_dir):
    with pytest.raises(StartupError, match="--device gpu .* sees no GPU"):
        ServingModel.load_latest(tiny_model_dir, device="gpu")


def test_unknown_device_is_refused(tiny_model_dir):
    with pytest.raises(
        StartupError, match="device must be one of auto, cpu, cpu-keras, gpu, not 'tpu'"
    ):
        ServingModel.load_latest(tiny_model_dir, device="tpu")


def test_batched_scores_equal_unbatched_ones(serving_model):
    batched = serving_model.predict(REVIEWS)
    alone = [serving_model.predict([review])[0] for review in REVIEWS]
    assert all(isinstance(score, float) for score in batched)
    assert batched == pytest.approx(alone, abs=1e-5, rel=0)
    # Scores really differ between reviews, so the comparison above means something.
    assert max(batched) - min(batched) > 1e-3


def test_scores_match_the_saved_end_to_end_model(serving_model):
    import keras

    full = keras.saving.load_model(serving_model.path / "model.keras", safe_mode=True)
    expected = [float(full(tf.constant([r]))[0, 0]) for r in REVIEWS]
    assert serving_model.predict(REVIEWS) == pytest.approx(expected, abs=1e-5, rel=0)


def test_wordless_reviews_fail_alone_and_never_change_other_scores(serving_model):
    with_wordless = ["!!!", REVIEWS[0], "<br /><br />", REVIEWS[1], "... ?!"]
    results = serving_model.predict(with_wordless)
    for index in (0, 2, 4):
        assert isinstance(results[index], InvalidReviewError)
        message = results[index].for_review(str(index))
        assert message.startswith(f"review {index} has no words after removing markup")
    assert [results[1], results[3]] == pytest.approx(serving_model.predict(REVIEWS[:2]), abs=1e-5)
    assert all(isinstance(r, InvalidReviewError) for r in serving_model.predict(["?", "<br/>"]))


def test_new_batch_shapes_do_not_retrace(serving_model):
    serving_model.warm_up()
    scorer = serving_model._fast
    for size in (1, 3, 6):
        serving_model.predict(REVIEWS[:size])
    assert serving_model._tokenize.experimental_get_tracing_count() == 1
    assert serving_model.scoring_path == "fast"
    # One trace and one XLA compile per batch bucket (at warm-up), none for a new shape.
    assert [p.experimental_get_tracing_count() for p in scorer.programs.values()] == [1] * len(
        scorer.buckets
    )


def test_flatten_metrics_keeps_numbers_only():
    flat = flatten_metrics({"test": {"accuracy": 0.9, "note": "x", "ok": True}, "loss": 1})
    assert flat == {"test.accuracy": 0.9, "loss": 1.0}


_WORDS = "great awful the movie plot boring superb zzz !!! <br /> , fun dull qq.".split()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(_WORDS), min_size=0, max_size=90).map(" ".join),
        min_size=1,
        max_size=12,
    )
)
def test_any_batch_scores_each_review_as_if_alone(serving_model, reviews):
    batched = serving_model.predict(reviews)
    for review, result in zip(reviews, batched, strict=True):
        (single,) = serving_model.predict([review])
        if isinstance(single, InvalidReviewError):
            assert isinstance(result, InvalidReviewError)
        else:
            assert result == pytest.approx(single, abs=1e-5, rel=0)


@pytest.mark.parametrize("lanes", [2, 3])
def test_a_large_batch_is_tokenised_in_parts_with_the_same_ids(serving_model, lanes):
    parted_model = serving_model.with_fast_path_lanes(lanes)
    try:
        # 49 rows: parts of 17, 17, 15 on three lanes, 25 and 24 on two; the first 17 rows have
        # no words (a part of width 0 on three lanes), the longest review is the last.
        reviews = ["!!!"] * 17 + [*REVIEWS * 11][:31] + [" ".join(REVIEWS * 3)]
        whole = serving_model._tokenize(tf.constant(reviews)).numpy()
        assert len(reviews) >= lanes * TOKENIZE_PART_ROWS
        parted = parted_model.tokenize(reviews)
        assert parted.shape == whole.shape and (parted == whole).all()
        scores = parted_model.predict(reviews)
        assert all(isinstance(result, InvalidReviewError) for result in scores[:17])
        assert scores[17:20] == pytest.approx(serving_model.predict(reviews[17:20]), abs=1e-6)
    finally:
        parted_model.close()
