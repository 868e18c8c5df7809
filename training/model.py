"""Model presets and the Keras model: raw review text in, probability of positive out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import keras

from training.layers import (
    HashedBigramBag,
    KeepLastTokens,
    LabelAccuracy,
    LabelAUC,
    TokenDropout,
    standardize_review,
    standardize_review_negation,
)


@dataclass(frozen=True)
class Preset:
    """Everything that shapes the model and its training run."""

    name: str
    vocab_size: int  # including the padding (0) and OOV (1) ids
    maxlen: int  # tokens kept per review: its last `maxlen`
    embedding_dim: int
    embedding_dropout: float  # drops whole embedding channels (SpatialDropout1D)
    token_dropout: float  # word dropout: real tokens replaced by OOV while training
    pretrained_embeddings: bool  # start from PPMI-SVD vectors of the training reviews
    train_embeddings: bool  # False: keep the embeddings fixed during training
    lstm_units: int
    bidirectional: bool
    # "last": the LSTM's final state; "mean": masked mean of its outputs over all
    # steps; "mean_with_embeddings": that, beside the masked mean of the embeddings
    # (a skip connection around the LSTM).
    pooling: str
    dense_units: int  # 0: no hidden dense layer
    dropout: float
    learning_rate: float
    batch_size: int
    max_epochs: int
    patience: int  # early stopping on validation loss
    validation_fraction: float
    tune_threshold: bool  # choose the decision threshold on validation (else 0.5)
    # Weight of the TF-IDF teacher's out-of-fold probability in the training
    # targets (training/teacher.py); 0 trains on the labels alone.
    distillation: float
    # How the teacher's folds are cut: "reviews" (single reviews) or "movies" (whole
    # blocks of consecutive ids, as the validation split holds out).
    teacher_folds: str
    # "plain": standardize_review; "negation": standardize_review_negation ("n't" -> "not").
    standardizer: str = "plain"
    # Hash buckets of word pairs in a linear bag beside the LSTM (layers.HashedBigramBag),
    # added to the LSTM's logit; 0: no bag, the LSTM alone.
    bag_buckets: int = 0
    # Hash buckets of word pairs in the same bag, but fitted after the LSTM has trained
    # (training/fitted_bag.py: NBSVM on the bag's features, its weight chosen on validation)
    # rather than trained with it; 0: none. Not with bag_buckets.
    fitted_bag_buckets: int = 0
    # Weight of an extra loss on the LSTM path's own score, so that path stays a whole
    # classifier rather than the bag's correction (the ablation the report shows).
    lstm_aux_weight: float = 0.0
    # "imdb", or "imdb+sst2+cad": IMDB plus SST-2's phrases and the CAD training pairs
    # (training/extra_data.py), each CAD pair repeated cad_repeats times.
    data_mix: str = "imdb"
    cad_repeats: int = 1
    # Passes of language-model pretraining of the embedding and LSTM over the training
    # texts before the classifier trains (training/pretrain.py); 0: none.
    lm_epochs: int = 0
    # Also train on the unlabelled IMDB reviews, each against a teacher's P(positive)
    # (training/soft_labels.py, `make teacher`); without them at hand, the labelled data alone.
    unlabelled: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    # The student report's model: Embedding 10000x32, LSTM(64), Dense(64, relu),
    # Dropout(0.5), Dense(1, sigmoid); maxlen 200; adam; batch 128; 20% validation.
    # Its Keras Tokenizer + pad_sequences kept each review's last 200 tokens, as
    # KeepLastTokens does; the mask replaces its pre-padding (no parameters).
    "seed": Preset(
        name="seed",
        vocab_size=10_000,
        maxlen=200,
        embedding_dim=32,
        embedding_dropout=0.0,
        token_dropout=0.0,
        pretrained_embeddings=False,
        train_embeddings=True,
        lstm_units=64,
        bidirectional=False,
        pooling="last",
        dense_units=64,
        dropout=0.5,
        learning_rate=1e-3,
        batch_size=128,
        max_epochs=20,
        patience=2,
        validation_fraction=0.2,
        tune_threshold=False,
        distillation=0.0,
        teacher_folds="reviews",
    ),
    "default": Preset(
        name="default",
        vocab_size=20_000,
        maxlen=500,
        embedding_dim=64,
        embedding_dropout=0.3,
        token_dropout=0.3,
        pretrained_embeddings=True,
        train_embeddings=True,
        lstm_units=64,
        bidirectional=True,
        pooling="mean_with_embeddings",
        dense_units=0,
        dropout=0.4,
        learning_rate=5e-4,
        batch_size=64,
        max_epochs=10,
        patience=2,
        validation_fraction=0.2,
        tune_threshold=True,
        distillation=0.5,
        teacher_folds="reviews",
    ),
    # Model 4: the default's BiLSTM, alone, reading text standardised with negation kept,
    # trained on IMDB + SST-2 phrases + counterfactual pairs (x4). Model 3 was this with a
    # hashed uni+bigram bag beside the LSTM (bag_buckets=1 << 20), learning rate 1e-3,
    # patience 2 and the pairs x2; it shipped its LSTM path alone, chosen on validation.
    "reader": Preset(
        name="reader",
        vocab_size=30_000,
        maxlen=500,
        embedding_dim=64,
        embedding_dropout=0.3,
        token_dropout=0.3,
        pretrained_embeddings=True,
        train_embeddings=True,
        lstm_units=64,
        bidirectional=True,
        pooling="mean",
        dense_units=0,
        dropout=0.4,
        learning_rate=5e-4,
        batch_size=64,
        max_epochs=8,
        patience=3,
        validation_fraction=0.2,
        tune_threshold=False,
        distillation=0.0,
        teacher_folds="reviews",
        standardizer="negation",
        bag_buckets=0,
        lstm_aux_weight=0.5,
        data_mix="imdb+sst2+cad",
        cad_repeats=4,
    ),
    # Seconds on a CPU: for tests and smoke runs, never for shipping.
    "tiny": Preset(
        name="tiny",
        vocab_size=500,
        maxlen=40,
        embedding_dim=8,
        embedding_dropout=0.0,
        token_dropout=0.0,
        pretrained_embeddings=False,
        train_embeddings=True,
        lstm_units=8,
        bidirectional=False,
        pooling="mean",
        dense_units=0,
        dropout=0.0,
        learning_rate=1e-2,
        batch_size=32,
        max_epochs=1,
        patience=1,
        validation_fraction=0.2,
        tune_threshold=True,
        distillation=0.0,
        teacher_folds="reviews",
    ),
}


# Model 5: the reader, also trained on the 49,731 unlabelled reviews against the scores of
# a teacher fitted on IMDB training text (knowledge distillation); three times the text an
# epoch, so fewer epochs and less patience.
PRESETS["student"] = replace(
    PRESETS["reader"], name="student", max_epochs=6, patience=2, unlabelled=True
)
# Model 6: the student, then a bag of words and word pairs fitted beside its LSTM.
PRESETS["student-bag"] = replace(PRESETS["student"], name="student-bag", fitted_bag_buckets=1 << 20)

POOLINGS = ("last", "mean", "mean_with_embeddings")
# The teacher's share of a training target: at most half, so each target leans to its label.
MAX_DISTILLATION = 0.5
TEACHER_FOLDS = ("reviews", "movies")
STANDARDIZERS = {"plain": standardize_review, "negation": standardize_review_negation}
DATA_MIXES = ("imdb", "imdb+sst2+cad")


def get_preset(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    if preset.teacher_folds not in TEACHER_FOLDS:  # these checks come before any data is read
        raise ValueError(
            f"teacher_folds must be one of {TEACHER_FOLDS}, not {preset.teacher_folds!r}"
        )
    for field, allowed in (("standardizer", STANDARDIZERS), ("data_mix", DATA_MIXES)):
        value = getattr(preset, field)
        if value not in allowed:
            raise ValueError(f"{field} must be one of {tuple(allowed)}, not {value!r}")
    if preset.bag_buckets < 0 or preset.cad_repeats < 1 or preset.lstm_aux_weight < 0:
        raise ValueError(
            f"bag_buckets >= 0, cad_repeats >= 1 and lstm_aux_weight >= 0 are required, not "
            f"{preset.bag_buckets}, {preset.cad_repeats} and {preset.lstm_aux_weight}"
        )
    if preset.fitted_bag_buckets < 0 or (preset.fitted_bag_buckets and preset.bag_buckets):
        raise ValueError(
            f"fitted_bag_buckets must be >= 0, and 0 with a trained bag (bag_buckets), not "
            f"{preset.fitted_bag_buckets} with bag_buckets {preset.bag_buckets}"
        )
    if preset.lm_epochs < 0 or (preset.lm_epochs and preset.pooling == "last"):
        raise ValueError(
            f"lm_epochs must be >= 0, and 0 with pooling 'last' (the language model reads "
            f"the LSTM's every state), not {preset.lm_epochs} with {preset.pooling!r}"
        )
    if preset.distillation and preset.data_mix != "imdb":
        raise ValueError("distillation needs data_mix=imdb (the teacher is fitted on IMDB alone)")
    if not 0.0 <= preset.distillation <= MAX_DISTILLATION:
        raise ValueError(
            f"distillation must be in [0, {MAX_DISTILLATION}] (the label keeps at least half "
            f"of each target), not {preset.distillation}"
        )
    return preset


def build_vectorizer(preset: Preset) -> keras.layers.TextVectorization:
    # No output_sequence_length: each batch is padded only to its own longest
    # review, and KeepLastTokens then caps it at maxlen.
    return keras.layers.TextVectorization(
        max_tokens=preset.vocab_size,
        standardize=STANDARDIZERS[preset.standardizer],
        split="whitespace",
        output_mode="int",
        name="vectorize",
    )


def build_classifier(preset: Preset) -> keras.Model:
    """Token ids [batch, time] (0 = padding) -> P(positive) [batch, 1]."""
    return build_classifiers(preset)[0]


def build_classifiers(preset: Preset) -> tuple[keras.Model, keras.Model]:
    """(classifier, trainer) sharing every layer: ids -> P(positive), and ids -> [that,
    the LSTM path's own score] for training with lstm_aux_weight. Without a bag both
    scores are the same."""
    if preset.pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {preset.pooling!r}")
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = ids
    if preset.token_dropout:
        x = TokenDropout(preset.token_dropout, name="token_dropout")(x)
    dropped_ids = x
    x = keras.layers.Embedding(
        preset.vocab_size,
        preset.embedding_dim,
        mask_zero=True,
        trainable=preset.train_embeddings,
        name="embedding",
    )(x)
    if preset.embedding_dropout:
        x = keras.layers.SpatialDropout1D(preset.embedding_dropout, name="embedding_dropout")(x)
    embedded = x
    lstm = keras.layers.LSTM(
        preset.lstm_units, return_sequences=preset.pooling != "last", name="lstm"
    )
    if preset.bidirectional:
        lstm = keras.layers.Bidirectional(lstm, name="bilstm")
    x = lstm(x)
    if preset.pooling != "last":
        # Averages over real tokens only (the mask drops padding), so a score
        # does not depend on how far its batch was padded. Max pooling would.
        x = keras.layers.GlobalAveragePooling1D(name="mean_over_tokens")(x)
    if preset.pooling == "mean_with_embeddings":
        bag = keras.layers.GlobalAveragePooling1D(name="mean_of_embeddings")(embedded)
        x = keras.layers.Concatenate(name="pooled")([x, bag])
    if preset.dense_units:
        x = keras.layers.Dense(preset.dense_units, activation="relu", name="dense")(x)
    if preset.dropout:
        x = keras.layers.Dropout(preset.dropout, name="dropout")(x)
    if not preset.bag_buckets:
        score = keras.layers.Dense(1, activation="sigmoid", name="score")(x)
        return keras.Model(ids, score, name="classifier"), keras.Model(ids, [score, score])
    lstm_logit = keras.layers.Dense(1, name="lstm_logit")(x)
    bag_logit = HashedBigramBag(preset.vocab_size, preset.bag_buckets, name="bag_logit")(
        dropped_ids
    )
    logit = keras.layers.Add(name="logit")([lstm_logit, bag_logit])
    score = keras.layers.Activation("sigmoid", name="score")(logit)
    lstm_score = keras.layers.Activation("sigmoid", name="lstm_score")(lstm_logit)
    return keras.Model(ids, score, name="classifier"), keras.Model(ids, [score, lstm_score])


def build_model(preset: Preset, vectorizer: keras.layers.TextVectorization) -> keras.Model:
    """Review text [batch] -> P(positive) [batch, 1], preprocessing included."""
    return build_models(preset, vectorizer)[0]


def build_models(
    preset: Preset, vectorizer: keras.layers.TextVectorization
) -> tuple[keras.Model, keras.Model]:
    """(model, trainer): the shipped text -> P(positive), and the compiled text -> [P, the
    LSTM path's P] it is trained as (the second loss weighted lstm_aux_weight)."""
    text = keras.Input(shape=(), dtype="string", name="review")
    ids = vectorizer(text)
    ids = KeepLastTokens(preset.maxlen, name="keep_last_tokens")(ids)
    classifier, trainer_core = build_classifiers(preset)
    model = keras.Model(text, classifier(ids), name=f"imdb_lstm_{preset.name}")
    # Against the label each target leans to: with distillation the
    # targets are soft, and exact comparison would count nothing right.
    metrics = [LabelAccuracy(name="accuracy"), LabelAUC(name="auc")]
    optimizer = keras.optimizers.Adam(preset.learning_rate)
    if not preset.bag_buckets:
        model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=metrics)
        return model, model
    trainer = keras.Model(text, trainer_core(ids), name=f"train_{preset.name}")
    trainer.compile(
        optimizer=optimizer,
        loss=["binary_crossentropy", "binary_crossentropy"],
        loss_weights=[1.0, preset.lstm_aux_weight],
        metrics=[metrics, [LabelAccuracy(name="accuracy")]],
    )
    return model, trainer


def lstm_path(model: keras.Model) -> keras.Model | None:
    """The LSTM path alone of a model with a bag beside its LSTM (None without one): text ->
    sigmoid(the LSTM's own logit), with the same "vectorize", "keep_last_tokens" and
    "classifier" layers a serving model has, so it can be shipped as it is."""
    classifier = model.get_layer("classifier")
    if "bag_logit" not in {layer.name for layer in classifier.layers}:
        return None
    # The same arithmetic as a model built without a bag: Dense(1, sigmoid) named "score".
    lstm_logit = classifier.get_layer("lstm_logit")
    score_layer = keras.layers.Dense(1, activation="sigmoid", name="score")
    score = score_layer(lstm_logit.input)
    score_layer.set_weights(lstm_logit.get_weights())
    reader = keras.Model(classifier.inputs, score, name="classifier")
    text = keras.Input(shape=(), dtype="string", name="review")
    ids = model.get_layer("keep_last_tokens")(model.get_layer("vectorize")(text))
    return keras.Model(text, reader(ids), name=f"{model.name}_lstm_path")


def trainable_parameters(model: keras.Model) -> int:
    return int(sum(keras.ops.size(w) for w in model.trainable_weights))
