"""Shipped model versions on disk: where they live, the newest complete one, loading one safely."""

from __future__ import annotations

from pathlib import Path

MODELS_ROOT = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MODEL_DIR = MODELS_ROOT / "imdb-lstm"
DEFAULT_SEED_MODEL_DIR = MODELS_ROOT / "imdb-lstm-seed"


class ModelLoadError(Exception):
    """A model directory or file that cannot be loaded as a sentiment model."""


def latest_version_dir(model_dir: Path) -> Path:
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: no such model directory")
    versions = [
        p for p in model_dir.iterdir() if p.name.isdigit() and (p / "metadata.json").is_file()
    ]
    if not versions:
        raise ModelLoadError(f"{model_dir}: no complete version folders (<int>/metadata.json)")
    return max(versions, key=lambda p: int(p.name))


def load_model(path: Path):
    """Loads a .keras model in safe mode, with a clear error for anything else."""
    import keras

    import training.layers  # noqa: F401  (registers the model's custom objects)

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises many types for bad files; one message for all
        raise ModelLoadError(f"{path}: not a loadable Keras model ({type(e).__name__}: {e})") from e
