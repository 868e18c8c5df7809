"""The extra data loaders (SST-2, CAD, contrast sets) and a tiny training run on the mix."""

import json
import re

import numpy as np
import pytest
import tensorflow as tf

from tests.extra_fixture import make_extra
from tests.imdb_fixture import make_archive
from training import compare, extra_data, metrics, train, versions
from training import data as imdb
from training.layers import HashedBigramBag, standardize_review_negation
from training.model import build_models, build_vectorizer, get_preset, lstm_path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    dataset = imdb.load(make_archive(root, per_class=150))
    pairs = list(zip(dataset.train.texts, dataset.train.labels.tolist(), strict=True))
    pairs = [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))]
    return dataset, make_extra(root, pairs)


def test_loads_every_file_and_tells_cad_originals_from_edits(data):
    dataset, root = data
    extra = extra_data.load(root, dataset.train.texts)
    assert len(extra.sst2_train) == 200 and extra.sst2_train.dropped_wordless == 1
    assert len(extra.cad_train) == 60 and len(set(extra.cad_train.pairs)) == 30
    assert len(extra.cad_dev_original) == len(extra.cad_dev_revised) == 10
    train_texts = set(dataset.train.texts)
    assert all(t in train_texts for t in extra.cad_dev_original.split.texts)
    assert not any(t in train_texts for t in extra.cad_dev_revised.split.texts)
    # Each edit flips its original's label.
    assert np.all(extra.cad_dev_original.split.labels != extra.cad_dev_revised.split.labels)
    assert list(extra.validation_sets()) == [
        "SST-2 dev",
        "CAD dev original",
        "CAD dev revised",
        "contrast original",
        "contrast edited",
    ]


@pytest.mark.parametrize(
    ("relative", "content", "message"),
    [
        ("sst2/train.tsv", None, "sst2/train.tsv: cannot read"),
        ("sst2/dev.tsv", "label\ttext\n1\tgood\n", "lacks column(s) sentence"),
        ("cad/train_paired.tsv", "Sentiment\tText\tbatch_id\nGood\tfine\t1\n", "line 2: label"),
        ("cad/train_paired.tsv", "Sentiment\tText\tbatch_id\nPositive\tfine\tx\n", "batch_id"),
        ("contrast/dev_original.tsv", "Sentiment\tText\n", "no rows after the header"),
        ("contrast/dev_contrast.tsv", b"Sentiment\tText\nPositive\t\xff\n", "not UTF-8"),
    ],
)
def test_a_missing_or_malformed_file_is_one_error_naming_it(
    data, tmp_path, relative, content, message
):
    dataset, root = data
    broken = tmp_path / "extra"
    for path in root.rglob("*.tsv"):
        target = broken / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    if content is None:
        (broken / relative).unlink()
    else:
        (broken / relative).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(imdb.DataError, match=re.escape(message)):
        extra_data.load(broken, dataset.train.texts)


def test_train_cli_exits_2_with_one_line_for_a_missing_extra_folder(data, tmp_path, capsys):
    archive = data[1].parent / "aclImdb.tar.gz"
    code = train.main(
        ["--data", str(archive), "--preset", "tiny", "--set", "data_mix=imdb+sst2+cad",
         "--extra-data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "nowhere: no such directory" in err


def test_negation_standardiser_makes_contractions_the_word_not():
    out = standardize_review_negation(tf.constant(["Isn't BAD.<br />It DOESN'T", "does n't"]))
    assert [s.decode().split() for s in out.numpy()] == [
        ["is", "not", "bad", "it", "does", "not"],
        ["does", "not"],
    ]


def test_bag_sums_word_and_pair_weights_over_the_root_of_the_length():
    bag = HashedBigramBag(vocab_size=10, buckets=7)
    bag.build((None, None))
    bag.word_weights.assign(np.arange(10, dtype="float32"))
    bag.pair_weights.assign(np.full(7, 0.5, dtype="float32"))
    ids = np.array([[2, 3, 1, 4, 0, 0], [0, 0, 0, 0, 0, 0]])
    # Row 0: real words 2, 3, 4 (1 is OOV, 0 padding); one real pair (2, 3).
    expected = (2 + 3 + 4 + 0.5) / np.sqrt(3)
    np.testing.assert_allclose(bag(ids).numpy().ravel(), [expected, 0.0], rtol=1e-6)


@pytest.fixture(scope="module")
def mix_run(data, tmp_path_factory):
    dataset, root = data
    extra = extra_data.load(root, dataset.train.texts)
    preset = get_preset(
        "tiny",
        max_epochs=3,
        data_mix="imdb+sst2+cad",
        bag_buckets=256,
        lstm_aux_weight=0.5,
        standardizer="negation",
        cad_repeats=2,
    )
    out = tmp_path_factory.mktemp("mixrun") / "imdb-lstm"
    version_dir = train.train(dataset, preset, out, seed=3, verbose=0, extra=extra, report=False)
    return dataset, extra, version_dir


def test_a_tiny_run_on_the_mix_selects_on_every_validation_set(mix_run):
    dataset, extra, version_dir = mix_run
    metadata = json.loads((version_dir / "metadata.json").read_text())
    mix = metadata["data"]["mix"]
    assert mix["SST-2 phrases"] == 200 and mix["CAD texts (x2)"] == 120
    assert mix["SST-2 rows dropped (no words)"] == 1
    # The dev originals are IMDB training reviews: none is trained on.
    assert mix["dev originals removed from IMDB train"] == 20
    assert set(metadata["metrics"]["validation_sets"]) == {
        "IMDB validation",
        *extra.validation_sets(),
    }
    history = json.loads((version_dir / "history.json").read_text())
    scores = history["val selection score"]
    assert metadata["training"]["best_epoch"] == int(np.argmax(scores)) + 1
    assert np.isfinite(history["loss"]).all()  # the wordless SST row never reached the LSTM
    assert metadata["metrics"]["validation"]["accuracy"] > 0.8


def test_the_whole_model_or_its_lstm_path_ships_whichever_validates_better(mix_run):
    _, _, version_dir = mix_run
    selection = json.loads((version_dir / "metadata.json").read_text())["selection"]
    scores = selection["selection_scores"]
    assert selection["shipped"] == max(scores, key=lambda k: (scores[k], k == "LSTM path alone"))
    model = versions.load_model(version_dir / "model.keras")
    layers = {layer.name for layer in model.get_layer("classifier").layers}
    assert ("bag_logit" in layers) == (selection["shipped"] == "whole model")


def test_the_lstm_path_alone_is_a_servable_classifier_without_the_bag(data, tmp_path):
    dataset, _ = data
    preset = get_preset("tiny", bag_buckets=64, lstm_aux_weight=0.5)
    vectorizer = build_vectorizer(preset)
    vectorizer.adapt(tf.constant(dataset.train.texts))
    model, _ = build_models(preset, vectorizer)
    bag = model.get_layer("classifier").get_layer("bag_logit")
    bag.word_weights.assign(np.linspace(-1, 1, preset.vocab_size).astype("float32"))
    reader = lstm_path(model)
    inner = {layer.name for layer in reader.get_layer("classifier").layers}
    assert "bag_logit" not in inner and {"vectorize", "keep_last_tokens"} <= {
        layer.name for layer in reader.layers
    }
    texts = dataset.test.texts[:50]
    whole, alone = metrics.score_texts(model, texts), metrics.score_texts(reader, texts)
    assert np.max(np.abs(whole - alone)) > 1e-3  # the bag contributed to the whole model
    reader.save(tmp_path / "model.keras")
    reloaded = versions.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(metrics.score_texts(reloaded, texts), alone, atol=1e-6)
    assert lstm_path(reloaded) is None  # no bag left to take away


def test_comparison_puts_every_model_on_every_set(mix_run, tmp_path):
    dataset, extra, version_dir = mix_run
    model = versions.load_model(version_dir / "model.keras")
    metadata = json.loads((version_dir / "metadata.json").read_text())
    columns = compare.compare(model, metadata, version_dir, dataset, extra, None, log=lambda m: 0)
    names = [c.name for c in columns]
    assert names[0] == "v1 (tiny)" and names[-1] == "TF-IDF + LR, same mix"
    has_bag = metadata["selection"]["shipped"] == "whole model"
    assert ("v1 (tiny): LSTM path alone" in names) == has_bag
    for column in columns:
        assert list(column.metrics) == ["IMDB test", *extra.validation_sets()]
        assert column.trained_on
    # The baseline fits the version's own mix: the cues are learnable.
    assert columns[-1].metrics["IMDB test"]["accuracy"] > 0.9
    lines = compare.markdown(columns)
    assert any(line.startswith("| IMDB test (300) |") for line in lines)
