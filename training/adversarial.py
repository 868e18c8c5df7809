"""Fine-tunes a trained version's LSTM by adversarial training on its word vectors: a new version.

    sentiment-finetune --base models/imdb-lstm/5 --data ../shared/data/aclImdb.tar.gz \
        --extra-data ../shared/data/extra --unlabelled-data ../shared/data/aclImdb-unsup.tar.gz

Adversarial training (Miyato, Dai & Goodfellow 2017): each step trains on a batch twice, as
it is and with every review's word vectors moved a small step the way that raises its loss
most (the loss's gradient, scaled to `epsilon` times the review's own embedding norm), so
the model cannot hang a verdict on a direction a word's vector barely has to move along.
The base's training mix is rebuilt from its metadata (seed, preset, data, the teacher's
scores of the unlabelled reviews: training/derived.py); each epoch is kept only if it beats
the base's selection score on the validation sets; then a bag is fitted beside the LSTM
(training/fitted_bag.py; --bag-buckets 0: none). Nothing is written when no epoch beats the
base. --epsilon 0 runs the same loop without the perturbation: the control. The served graph
is the base's: the perturbation lives in a training graph alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training import data as imdb
from training import derived, extra_data, fitted_bag, soft_labels
from training.batches import length_grouped_batches
from training.mix import SelectOnValidationSets, SoftLabelled, choose_whole_or_lstm
from training.model import lstm_path

# The perturbation's size, relative to the review's embedding norm. Miyato et al.'s 5.0 on
# unit-variance 256-wide vectors of ~400-word reviews is about 0.016 of that norm. Version 7
# was tuned at 0.02, version 8 at 0.05: the better selection score with its bag, on validation.
DEFAULT_EPSILON = 0.05


class EmbeddingNoise(keras.layers.Layer):
    """The identity on word vectors [batch, time, dim], plus `perturbation` while it is set.
    Keeps the last input it saw (and its mask), so a training step can take the loss's
    gradient with respect to the vectors. Training graphs only: never saved."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.perturbation = None
        self.seen = None
        self.seen_mask = None

    def call(self, vectors, mask=None):
        self.seen, self.seen_mask = vectors, mask
        return vectors if self.perturbation is None else vectors + self.perturbation


def adversarial_perturbation(vectors, gradient, mask, epsilon: float):
    """`gradient` per review scaled to `epsilon` times the norm of the review's real word
    vectors (padding is masked out of both)."""
    real = tf.cast(mask, vectors.dtype)[:, :, None]
    gradient = gradient * real
    gradient_norm = tf.sqrt(tf.reduce_sum(tf.square(gradient), axis=[1, 2], keepdims=True))
    vectors_norm = tf.sqrt(tf.reduce_sum(tf.square(vectors * real), axis=[1, 2], keepdims=True))
    return epsilon * vectors_norm * gradient / (gradient_norm + 1e-12)


def training_graph(model: keras.Model, noise: EmbeddingNoise) -> keras.Model:
    """text -> P(positive) through `model`'s own layers (weights shared), with `noise`
    right after the embedding. `model` must be a chain of layers without a bag."""
    if lstm_path(model) is not None:
        raise ValueError("adversarial fine-tuning takes a model without a bag beside its LSTM")
    classifier = model.get_layer("classifier")
    text = keras.Input(shape=(), dtype="string", name="review")
    x = model.get_layer("keep_last_tokens")(model.get_layer("vectorize")(text))
    for layer in classifier.layers[1:]:  # after the ids' input layer
        x = layer(x)
        if layer.name == "embedding":
            x = noise(x)
    return keras.Model(text, x, name=f"{model.name}_adversarial")


def make_train_step(trainer: keras.Model, noise: EmbeddingNoise, epsilon: float, learning_rate):
    """One step on a batch: the loss as it is plus the loss under the adversarial step
    (returned apart); with `epsilon` 0 the loss as it is alone (returned twice)."""
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(trainer.trainable_variables)
    loss_fn = keras.losses.BinaryCrossentropy()

    @tf.function(reduce_retracing=True)
    def plain_step(texts, targets):  # epsilon 0: the same fine-tuning, no adversarial pass
        with tf.GradientTape() as tape:
            clean = loss_fn(targets, trainer(texts, training=True))
        variables = trainer.trainable_variables
        optimizer.apply(tape.gradient(clean, variables), variables)
        return clean, clean

    @tf.function(reduce_retracing=True)
    def step(texts, targets):
        with tf.GradientTape() as tape:
            with tf.GradientTape() as inner:
                noise.perturbation = None
                clean = loss_fn(targets, trainer(texts, training=True))
            vectors, mask = noise.seen, noise.seen_mask
            gradient = tf.stop_gradient(inner.gradient(clean, vectors))
            noise.perturbation = tf.stop_gradient(
                adversarial_perturbation(vectors, gradient, mask, epsilon)
            )
            adversarial = loss_fn(targets, trainer(texts, training=True))
            noise.perturbation = None
            loss = clean + adversarial
        variables = trainer.trainable_variables
        optimizer.apply(tape.gradient(loss, variables), variables)
        return clean, adversarial

    return step if epsilon else plain_step


def fine_tune(
    model: keras.Model,
    texts: list[str],
    targets: np.ndarray,
    sets: dict,
    *,
    epsilon: float,
    learning_rate: float,
    batch_size: int,
    epochs: int,
    patience: int,
    seed: int,
    log=print,
) -> dict:
    """Trains `model`'s weights in place; leaves those of its best epoch on validation, or the
    base's own if no epoch beat them. Returns the record of the run."""
    noise = EmbeddingNoise(name="embedding_noise")
    trainer = training_graph(model, noise)
    step = make_train_step(trainer, noise, epsilon, learning_rate)
    select = SelectOnValidationSets(model, sets, patience, must_beat_start=True, log=log)
    select.set_model(model)  # the served model: its weights are the trainer's
    log(f"base: selection score {select.best_score:.4f}")
    history = {"base": select.start, "epochs": []}
    batches = length_grouped_batches(texts, targets, batch_size, seed)
    started = time.monotonic()
    for epoch in range(epochs):
        losses = np.array([[float(v) for v in step(x, y)] for x, y in batches])
        clean, adversarial = losses.mean(axis=0)
        log(
            f"epoch {epoch + 1}: loss {clean:.4f}, adversarial loss {adversarial:.4f} "
            f"({time.monotonic() - started:.0f} s)"
        )
        select.on_epoch_end(epoch)
        history["epochs"].append({"loss": clean, "adversarial_loss": adversarial, **select.last})
        if select.stopped:
            break
    select.on_train_end()
    return {
        "epsilon": epsilon,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "best_epoch": select.best_epoch,
        "seconds": round(time.monotonic() - started, 1),
        "history": history,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sentiment-finetune", description=__doc__.splitlines()[0])
    derived.add_base_arguments(parser)
    parser.add_argument(
        "--unlabelled-data",
        help=f"aclImdb with train/unsup (default: ${imdb.UNLABELLED_ENV_VAR})",
    )
    parser.add_argument("--teacher-scores", type=Path, default=soft_labels.DEFAULT_OUT)
    parser.add_argument(
        "--epsilon",
        type=float,
        default=DEFAULT_EPSILON,
        help="the step's size, relative to each review's embedding norm; 0: plain fine-tuning "
        "(the control)",
    )
    parser.add_argument("--learning-rate", type=float, help="default: half the base's")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--patience", type=int, default=1)
    parser.add_argument(
        "--bag-buckets",
        type=int,
        default=1 << 20,
        help="hash buckets of word pairs in a fitted bag beside the LSTM (0: none)",
    )
    parser.add_argument("--limit", type=int, help="this many training texts (smoke runs)")
    derived.add_output_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.epsilon < 0 or args.epochs < 1 or args.patience < 1:
            raise ValueError("--epsilon >= 0, --epochs >= 1 and --patience >= 1 are required")
        base = derived.load_base(args.base)
        dataset = imdb.load(args.data)
        extra = extra_data.load(args.extra_data, dataset.train.texts)
        unlabelled = None
        if base.preset.unlabelled:
            reviews = imdb.load_unlabelled(args.unlabelled_data, dataset.test.texts)
            scores, _ = soft_labels.read(args.teacher_scores, reviews, base.seed)
            unlabelled = SoftLabelled(reviews.texts, scores)
        mix = derived.rebuild_mix(base, dataset, extra, unlabelled)
    except derived.LOAD_ERRORS as e:
        print(f"sentiment-finetune: error: {e}", file=sys.stderr)
        return 2
    print(mix.describe(), flush=True)
    texts, targets = mix.texts, mix.labels
    if args.limit:
        keep = np.random.default_rng(base.seed).permutation(len(texts))[: args.limit]
        texts, targets = [texts[i] for i in keep], np.asarray(targets)[keep]
    model = base.model
    record = fine_tune(
        model,
        texts,
        targets,
        mix.validation_sets,
        epsilon=args.epsilon,
        learning_rate=args.learning_rate or base.preset.learning_rate / 2,
        batch_size=base.preset.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        seed=base.seed,
        log=lambda line: print(line, flush=True),
    )
    if record["best_epoch"] == 0:
        print("sentiment-finetune: no epoch beat the base on validation: no new version")
        return 0
    whole, extras = model, {}
    if args.bag_buckets:
        labelled_texts, labels = mix.labelled()
        whole, bag = fitted_bag.attach(
            model, base.preset, labelled_texts, labels, mix.validation_sets, args.bag_buckets
        )
        whole, selection = choose_whole_or_lstm(whole, mix.validation_sets)
        extras = {"bag": bag, "selection": selection}
    with_bag = lstm_path(whole) is not None
    derived.write_next_version(
        args,
        base,
        dataset,
        mix,
        whole,
        preset_name=f"{base.preset_name}-adversarial" + ("-bag" if with_bag else ""),
        hyperparameters={"fitted_bag_buckets": args.bag_buckets if with_bag else 0},
        record={"adversarial": record, **extras},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
