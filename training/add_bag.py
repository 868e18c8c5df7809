"""Adds a fitted bag (training/fitted_bag.py) beside a trained version's LSTM: a new version.

    sentiment-fit-bag --base models/imdb-lstm/5 --data ../shared/data/aclImdb.tar.gz \
        --extra-data ../shared/data/extra

The base's training mix is rebuilt from its metadata (seed, preset, data); the bag is
fitted on its labelled texts and weighed on its validation sets, then the whole model is
scored on the test set once (skip with --no-report) and written as the next version.
Nothing is written if the LSTM alone scores at least as well on validation. A base that has
a fitted bag already gets a new one in its place, on the grid as it is now (its LSTM as it was).
"""

from __future__ import annotations

import argparse
import sys

from training import data as imdb
from training import derived, extra_data
from training.fitted_bag import attach
from training.mix import choose_whole_or_lstm


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sentiment-fit-bag", description=__doc__.splitlines()[0])
    derived.add_base_arguments(parser)
    parser.add_argument("--buckets", type=int, default=1 << 20, help="hash buckets of word pairs")
    derived.add_output_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        base = derived.load_base(args.base)
        dataset = imdb.load(args.data)
        extra = extra_data.load(args.extra_data, dataset.train.texts)
        mix = derived.rebuild_mix(base, dataset, extra)  # labelled texts only
    except derived.LOAD_ERRORS as e:
        print(f"sentiment-fit-bag: error: {e}", file=sys.stderr)
        return 2
    print(mix.describe(), flush=True)
    whole, record = attach(
        base.model, base.preset, mix.texts, mix.labels, mix.validation_sets, args.buckets
    )
    shipped, selection = choose_whole_or_lstm(whole, mix.validation_sets)
    if shipped is not whole:
        print("sentiment-fit-bag: the LSTM alone scores as well on validation: no new version")
        return 0
    derived.write_next_version(
        args,
        base,
        dataset,
        mix,
        whole,
        preset_name=f"{base.preset_name}-bag",  # the preset whose make train remakes it
        hyperparameters={"fitted_bag_buckets": args.buckets},
        record={"bag": record, "selection": selection},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
