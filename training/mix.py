"""The training data mix (IMDB alone, or IMDB + SST-2 + CAD) and selection on validation sets.

What is held out, and why:
- The CAD dev originals and contrast-set originals are IMDB *training* reviews
  (all 345 of them): they are removed from the training portion, so the dev sets
  stay validation data.
- A CAD training pair whose original is in the IMDB validation split would put a
  validation review into training: that review leaves the validation split.
- The 6 CAD training texts that are also IMDB test reviews (the archive's own
  duplicates) drop out with their pairs.
- Unlabelled reviews (with a teacher's soft label each, training/soft_labels.py) that
  repeat a review of any validation set are left out: validation text is never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from training.data import Split, comparable
from training.extra_data import ExtraData, Labelled, normalise_space
from training.metrics import score_texts
from training.model import Preset, lstm_path

IMDB_VALIDATION = "IMDB validation"
# The selection score averages these groups' accuracies; each edit set is pooled with
# its originals, so a model that answers every edited review as its original scores 0.5.
SELECTION_GROUPS = (
    (IMDB_VALIDATION,),
    ("SST-2 dev",),
    ("CAD dev original", "CAD dev revised"),
    ("contrast original", "contrast edited"),
)
UNLABELLED_COUNT = "unlabelled reviews (teacher's scores)"


@dataclass
class TrainingMix:
    imdb_train: Split
    imdb_validation: Split
    texts: list[str]
    labels: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    validation_sets: dict[str, Labelled] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        return dict(self.counts)

    def labelled(self) -> tuple[list[str], np.ndarray]:
        """The texts with a label (the unlabelled reviews, with a teacher's score, come last)."""
        count = len(self.texts) - self.counts.get(UNLABELLED_COUNT, 0)
        return self.texts[:count], np.asarray(self.labels[:count]).astype(np.int32)

    def describe(self) -> str:
        return "training mix: " + ", ".join(f"{k} {v:,}" for k, v in self.counts.items())


def without(split: Split, texts: set[str]) -> tuple[Split, int]:
    """`split` less the texts in `texts` (compared with normalised spaces), and how many left."""
    keep = [i for i, t in enumerate(split.texts) if normalise_space(t) not in texts]
    ids = split.ids[keep] if split.ids is not None else None
    kept = Split([split.texts[i] for i in keep], split.labels[keep], ids)
    return kept, len(split) - len(kept)


@dataclass(frozen=True)
class SoftLabelled:
    """Unlabelled texts with a teacher's P(positive) each: targets, never labels."""

    texts: list[str]
    scores: np.ndarray


def build_mix(
    preset: Preset,
    train: Split,
    validation: Split,
    test: Split,
    extra: ExtraData | None,
    unlabelled: SoftLabelled | None = None,
) -> TrainingMix:
    """The texts and targets one epoch trains on, and the named validation sets."""
    mix = _labelled_mix(preset, train, validation, test, extra)
    if unlabelled is None:
        return mix
    held_out = {
        comparable(t)
        for s in [mix.imdb_validation, *(v.split for v in mix.validation_sets.values())]
        for t in s.texts
    }
    keep = [i for i, t in enumerate(unlabelled.texts) if comparable(t) not in held_out]
    mix.texts = mix.texts + [unlabelled.texts[i] for i in keep]
    mix.labels = np.concatenate([mix.labels, unlabelled.scores[keep]]).astype(np.float32)
    mix.counts[UNLABELLED_COUNT] = len(keep)
    mix.counts["unlabelled reviews dropped (a validation text)"] = len(unlabelled.texts) - len(keep)
    return mix


def _labelled_mix(
    preset: Preset, train: Split, validation: Split, test: Split, extra: ExtraData | None
) -> TrainingMix:
    if preset.data_mix == "imdb":
        counts = {"IMDB reviews": len(train)}
        return TrainingMix(train, validation, list(train.texts), train.labels, counts)
    if extra is None:
        raise ValueError(f"data_mix {preset.data_mix!r} needs the extra data (--extra-data)")
    dev_originals = {
        normalise_space(t)
        for s in (extra.cad_dev_original, extra.contrast_original)
        for t in s.split.texts
    }
    train, dropped_dev = without(train, dev_originals)
    validation, dropped_dev_val = without(validation, dev_originals)

    cad = extra.cad_train
    texts = [normalise_space(t) for t in cad.split.texts]
    test_texts = {normalise_space(t) for t in test.texts}
    validation_texts = {normalise_space(t) for t in validation.texts}
    in_test = {p for p, t in zip(cad.pairs, texts, strict=True) if t in test_texts}
    keep = [i for i, p in enumerate(cad.pairs) if p not in in_test]
    originals_in_validation = {texts[i] for i in keep} & validation_texts
    validation, moved = without(validation, originals_in_validation)
    cad_texts = [cad.split.texts[i] for i in keep] * preset.cad_repeats
    cad_labels = np.tile(cad.split.labels[keep], preset.cad_repeats)

    sst = extra.sst2_train.split
    mix_texts = list(train.texts) + list(sst.texts) + cad_texts
    mix_labels = np.concatenate([train.labels, sst.labels, cad_labels]).astype(np.int32)
    counts = {
        "IMDB reviews": len(train),
        "SST-2 phrases": len(sst),
        f"CAD texts (x{preset.cad_repeats})": len(cad_texts),
        "dev originals removed from IMDB train": dropped_dev + dropped_dev_val,
        "CAD texts dropped (pair in IMDB test)": len(cad.pairs) - len(keep),
        "CAD originals removed from IMDB validation": moved,
        "SST-2 rows dropped (no words)": extra.sst2_train.dropped_wordless,
    }
    validation_sets = {IMDB_VALIDATION: Labelled(IMDB_VALIDATION, validation)}
    validation_sets.update(extra.validation_sets())
    return TrainingMix(train, validation, mix_texts, mix_labels, counts, validation_sets)


def selection_score(accuracies: dict[str, float]) -> float:
    return float(
        np.mean([np.mean([accuracies[name] for name in group]) for group in SELECTION_GROUPS])
    )


class SelectOnValidationSets(keras.callbacks.Callback):
    """Scores every validation set after each epoch; keeps the weights of the epoch with the
    best selection score and stops after `patience` epochs without a better one. With
    `must_beat_start` (fine-tuning), an epoch is kept only if it beats the weights `model`
    starts with, which come back otherwise (the best epoch is then 0)."""

    def __init__(
        self,
        model: keras.Model,
        sets: dict[str, Labelled],
        patience: int,
        *,
        must_beat_start: bool = False,
        log=lambda line: print(line, flush=True),
    ):
        super().__init__()
        self.scored_model = model  # the shipped text -> P(positive) model, sharing weights
        self.sets = sets
        self.patience = patience
        self.log = log
        self.best_score = -np.inf
        self.best_epoch = 0
        self.best_weights = None
        self.stopped = False
        self.history: dict[str, list[float]] = {}
        self.start: dict[str, float] = {}
        self.last: dict[str, float] = {}  # the last epoch's scores
        if must_beat_start:
            self.start = self.scores()
            self.best_score, self.best_weights = self.start["selection score"], model.get_weights()

    def scores(self) -> dict[str, float]:
        """Each validation set's accuracy and the selection score, of the weights as they are."""
        accuracies = validation_accuracies(self.scored_model, self.sets)
        return {**accuracies, "selection score": selection_score(accuracies)}

    def on_epoch_end(self, epoch, logs=None):
        scores = self.last = self.scores()
        for name, value in scores.items():
            self.history.setdefault(f"val {name}", []).append(value)
        self.log(
            f"epoch {epoch + 1} validation: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        )
        if scores["selection score"] > self.best_score:
            self.best_score, self.best_epoch = scores["selection score"], epoch + 1
            self.best_weights = self.model.get_weights()
        elif epoch + 1 - self.best_epoch >= self.patience:
            self.stopped = self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            self.log(f"restored the weights of epoch {self.best_epoch} (0: as they started)")


def validation_accuracies(model: keras.Model, sets: dict[str, Labelled]) -> dict[str, float]:
    return {
        name: float(np.mean((score_texts(model, s.split.texts) >= 0.5) == s.split.labels))
        for name, s in sets.items()
    }


def choose_whole_or_lstm(model: keras.Model, sets: dict[str, Labelled]) -> tuple[keras.Model, dict]:
    """The whole model or its LSTM path alone, whichever has the better selection score on
    the validation sets (a tie goes to the LSTM alone, the smaller model); and the record."""
    reader = lstm_path(model)
    if reader is None:
        return model, {}
    accuracies = {
        "whole model": validation_accuracies(model, sets),
        "LSTM path alone": validation_accuracies(reader, sets),
    }
    scores = {name: selection_score(values) for name, values in accuracies.items()}
    shipped = (
        "LSTM path alone" if scores["LSTM path alone"] >= scores["whole model"] else "whole model"
    )
    print(f"selection scores: {scores}; shipping the {shipped}", flush=True)
    record = {"selection_scores": scores, "accuracies": accuracies, "shipped": shipped}
    return (reader if shipped == "LSTM path alone" else model), record
