"""Two shipped versions' fast-path limits side by side, in one process, in turns.

    .venv/bin/python -m bench.model_cost --versions 4 5 \
        --json-out reports/model/v4-v5-fast-path.json

What a new model version costs to serve against the one before it (issue #25's budget:
at least 0.5x the previous version's in-process limit), on the bench's seeded sample
of IMDB test reviews, at batch sizes 32 and 128 (what the server forms at 64 and 256
calls in flight).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.common.reviews import data_path, sample_test_reviews
from bench.paths import sweep
from server.config import DEFAULT_MODEL_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.model_cost", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--versions", type=int, nargs=2, required=True)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--data", help="aclImdb .tar.gz or directory")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0, help="per batch size and round")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    from server.scoring.model import ServingModel
    from server.scoring.versions import complete_versions

    found = {v.version: v for v in complete_versions(args.model_dir)}
    models = {f"v{n}": ServingModel.load_version(found[n], device="cpu") for n in args.versions}
    for model in models.values():
        model.warm_up()
    reviews = sample_test_reviews(data_path(args.data), 2000, 0).reviews
    predicts = {name: model.predict for name, model in models.items()}
    swept = sweep(predicts, reviews, [32, 128], args.seconds, args.rounds)
    first, second = swept
    result = {"sweep": swept, "ratio": {}}
    for a, b in zip(swept[first], swept[second], strict=True):
        ratio = b["reviews_per_s"] / a["reviews_per_s"]
        result["ratio"][str(a["batch_size"])] = round(ratio, 3)
        print(
            f"batch {a['batch_size']}: {first} {a['reviews_per_s']:.0f}/s, "
            f"{second} {b['reviews_per_s']:.0f}/s: {ratio:.2f}x"
        )
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
