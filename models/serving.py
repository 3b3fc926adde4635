"""The served form of a trained model: an MLflow pyfunc from item-id histories to top-k item ids with scores.

Input: a DataFrame with a ``history`` column (a list of external item ids per
row, oldest first). Output: ``item_ids`` (list of the top-k external ids) and
``scores`` per row. Ids the model has never seen are skipped and counted in
``unknown_items``; items already in the history are not recommended again
unless the parameter ``exclude_seen`` is false.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

BUNDLE = "bundle.pt"


def save_bundle(model, item_ids: list[str] | None, path: str | Path) -> None:
    """Everything needed to rebuild the model without the training code's state."""
    ids = item_ids if item_ids is not None else [""] + [str(i) for i in range(1, model.num_items + 1)]
    knowledge = getattr(model.backbone.items, "knowledge", None)
    torch.save({"name": model.name, "config": model.cfg.model_dump(mode="json"), "num_items": model.num_items,
                "state": model.state_dict(), "item_ids": ids,
                "knowledge": None if knowledge is None else knowledge[: model.num_items + 1].cpu()}, path)


def load_bundle(path: str | Path):
    from models import build_model
    from reaflow.settings import ModelSettings

    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(saved["name"], ModelSettings(**saved["config"]), saved["num_items"], saved["knowledge"])
    model.load_state_dict(saved["state"])
    model.eval()
    return model, saved["item_ids"]


def top_k(model, histories: list[np.ndarray], k: int, exclude_seen: bool = True,
          batch_size: int = 256) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per history (item indices), the model's top-k item indices and their scores, seen items left out by default."""
    from models.data import history_batches
    from models.evaluate import remove_seen

    device = next(model.parameters()).device
    k = min(k, model.num_items)
    indices: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(histories)
    scores: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(histories)
    for rows, batch in history_batches(histories, batch_size, model.cfg.max_len):
        batch_scores = model.score(batch.to(device))
        if exclude_seen:
            remove_seen(batch_scores, [histories[i] for i in rows])
        values, top = (t.cpu().numpy() for t in batch_scores.topk(k, dim=1))
        for r, i in enumerate(rows):
            indices[i], scores[i] = top[r], values[r]
    return indices, scores


def recommend(model, item_ids: list[str], histories: list[list], k: int, exclude_seen: bool = True) -> tuple[list, list, list]:
    """Top-k external ids and scores for each history; also the count of unknown ids per row."""
    index = {item: i for i, item in enumerate(item_ids) if i > 0}
    encoded, unknown = [], []
    for history in histories:
        history = history if history is not None else []
        known = [index[str(item)] for item in history if str(item) in index]
        encoded.append(np.asarray(known, dtype=np.int64))
        unknown.append(len(history) - len(known))
    indices, scores = top_k(model, encoded, k, exclude_seen)
    top_ids = [[item_ids[j] for j in row.tolist()] for row in indices]
    return top_ids, [[float(v) for v in row.tolist()] for row in scores], unknown


def _python_model_class():
    import mlflow.pyfunc

    class TopKRecommender(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            torch.set_num_threads(1)
            self.model, self.item_ids = load_bundle(context.artifacts["bundle"])

        def predict(self, context, model_input, params=None):
            import pandas as pd

            params = params or {}
            histories = [list(h) if h is not None else [] for h in model_input["history"]]
            ids, scores, unknown = recommend(self.model, self.item_ids, histories, int(params.get("k", 10)),
                                             bool(params.get("exclude_seen", True)))
            return pd.DataFrame({"item_ids": ids, "scores": scores, "unknown_items": unknown})

    return TopKRecommender


def signature(top_k: int):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(Array("string"), "history")]),
        outputs=Schema([ColSpec(Array("string"), "item_ids"), ColSpec(Array("double"), "scores"), ColSpec("long", "unknown_items")]),
        params=ParamSchema([ParamSpec("k", "long", top_k), ParamSpec("exclude_seen", "boolean", True)]),
    )


def log_recommender(model, data, top_k: int) -> str:
    """Log the model to the active MLflow run as ``model``; returns the model URI."""
    import mlflow
    import pandas as pd

    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / BUNDLE
        save_bundle(model, data.item_ids, bundle)
        example = [[str(x) for x in (data.item_ids or [])[1:4]]] if data.item_ids else [["1", "2"]]
        with warnings.catch_warnings():
            # MLflow checks the example against the declared signature and warns that integer
            # columns cannot hold missing values; ``unknown_items`` never has any.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=_python_model_class()(), artifacts={"bundle": str(bundle)},
                signature=signature(top_k), input_example=pd.DataFrame({"history": example}),
                code_paths=[str(repo / "models"), str(repo / "reaflow")],
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "pandas", "pydantic-settings", "pyyaml"],
            )
    return info.model_uri
