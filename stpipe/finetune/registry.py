"""MLflow as the registry of tuned encoders.

Embedded default: a SQLite tracking store under the warehouse (``<warehouse>/_mlflow/mlflow.db``,
artefacts under ``<warehouse>/_mlflow/artifacts``); ``MLFLOW_TRACKING_URI`` points at a real
server instead. Every training is one run of the experiment ``stpipe-finetune`` (settings as
parameters, the loss curve and validation recall as step metrics, the as-of date, data
fingerprint, base weights' and settings' digests as tags). The tuned folder is logged as the
run's artefact ``encoder`` and registered as a version of ``model.finetune.registered_name``
only when its validation recall beats the base encoder's.

Versions are downloaded once to ``<warehouse>/_mlflow/models/<name>-v<version>`` (the folder
name is the label embed records with each vector, so a new version re-embeds).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stpipe import tables
from stpipe.errors import ConfigError, PipelineError

log = logging.getLogger("stpipe.finetune")

EXPERIMENT = "stpipe-finetune"


@dataclass(frozen=True)
class Training:
    """The newest finished training run: what it was trained on, and its version if registered."""

    run_id: str
    as_of: dt.date
    data_fingerprint: str
    base_digest: str
    settings_digest: str
    version: int | None


def mlflow_root(warehouse: str) -> Path:
    folder = tables.local_folder(warehouse)
    if folder is None:
        raise ConfigError(
            f"storage.warehouse {warehouse} is not a local folder: set MLFLOW_TRACKING_URI to an "
            "MLflow server for the encoder registry"
        )
    return folder.expanduser().resolve() / "_mlflow"


def tracking_uri(warehouse: str) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the SQLite store under the warehouse."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root = mlflow_root(warehouse)
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def client(warehouse: str) -> Any:
    """An MlflowClient on the warehouse's store (tracking and registry alike)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema set-up chatter on first use
    from mlflow import MlflowClient

    uri = tracking_uri(warehouse)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(mlf: Any, warehouse: str) -> str:
    found = mlf.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    artifacts = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        artifacts = (mlflow_root(warehouse) / "artifacts").as_uri()
    return mlf.create_experiment(EXPERIMENT, artifact_location=artifacts)


def log_training(
    warehouse: str,
    *,
    name: str,
    result: dict[str, Any],
    tags: dict[str, str],
) -> int | None:
    """Record one training as an MLflow run; register the tuned folder as a version of ``name``
    only when its validation recall beats the base's. Return the version number, or None."""
    from mlflow.entities import Metric, Param

    mlf = client(warehouse)
    run = mlf.create_run(experiment_id(mlf, warehouse), tags={"stpipe.kind": "finetune", **tags})
    run_id = run.info.run_id
    now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    params = [Param(k, str(v)) for k, v in sorted(result["params"].items())]
    params += [Param("train_pairs", str(result["train_pairs"])),
               Param("validation_pairs", str(result["validation_pairs"])),
               Param("precision_used", result["precision"])]
    metrics = [Metric("loss", loss, now, step) for step, loss in result["curve"]]
    metrics += [Metric("val_recall_at_10", value, now, step) for step, value in result["evals"]]
    metrics += [Metric(k, float(result[k]), now, 0) for k in ("before", "after", "pairs_per_s", "seconds")]
    mlf.log_batch(run_id, metrics=metrics, params=params)
    better = result["after"] > result["before"]
    version = None
    if better:
        mlf.log_artifacts(run_id, result["out_dir"], "encoder")
        try:
            mlf.get_registered_model(name)
        except Exception:  # MlflowException RESOURCE_DOES_NOT_EXIST; its type moves between versions
            mlf.create_registered_model(name)
        source = f"{run.info.artifact_uri}/encoder"
        made = mlf.create_model_version(name, source=source, run_id=run_id, tags=tags)
        version = int(made.version)
    mlf.set_tag(run_id, "stpipe.version", str(version) if version else "none")
    mlf.set_terminated(run_id)
    log.info("finetune: recall@10 %.4f -> %.4f; %s", result["before"], result["after"],
             f"registered {name} version {version}" if version else "not better than the base: not registered")
    return version


def latest_training(warehouse: str) -> Training | None:
    """The newest finished finetune run of the warehouse's store, or None."""
    mlf = client(warehouse)
    found = mlf.get_experiment_by_name(EXPERIMENT)
    if found is None:
        return None
    runs = mlf.search_runs(
        [found.experiment_id], "tags.`stpipe.kind` = 'finetune' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        return None
    tags = runs[0].data.tags
    version = tags.get("stpipe.version", "none")
    return Training(
        run_id=runs[0].info.run_id, as_of=dt.date.fromisoformat(tags["stpipe.as_of"]),
        data_fingerprint=tags.get("stpipe.data_fingerprint", ""),
        base_digest=tags.get("stpipe.base_digest", ""),
        settings_digest=tags.get("stpipe.settings_digest", ""),
        version=int(version) if version.isdigit() else None,
    )


def validation_curve(warehouse: str, run_id: str) -> list[tuple[int, float]]:
    """(step, validation recall@10) of a training run, step 0 being the base encoder's."""
    mlf = client(warehouse)
    history = mlf.get_metric_history(run_id, "val_recall_at_10")
    return sorted((int(m.step), float(m.value)) for m in history)


def registered_versions(warehouse: str, name: str) -> list[tuple[int, dt.date]]:
    """(version, as-of date) of every registered version of ``name``, oldest first."""
    mlf = client(warehouse)
    found = mlf.search_model_versions(f"name = '{name}'")
    out = [(int(v.version), dt.date.fromisoformat(v.tags.get("stpipe.as_of", "1970-01-01")))
           for v in found]
    return sorted(out)


def version_folder(warehouse: str, name: str, version: int) -> Path:
    """The local folder of a registered version (downloaded on first use)."""
    import mlflow.artifacts

    folder = mlflow_root(warehouse) / "models" / f"{name}-v{version}"
    if (folder / "config.json").is_file():
        return folder
    mlf = client(warehouse)
    try:
        made = mlf.get_model_version(name, str(version))
    except Exception:
        raise PipelineError(f"model.encoder: {name} has no version {version}") from None
    staging = folder.with_name(folder.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    got = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=made.source, dst_path=str(staging), tracking_uri=tracking_uri(warehouse)
    ))
    got.rename(folder)  # whole or absent: a killed download leaves only the .partial folder
    return folder


def resolve_encoder(
    warehouse: str, *, encoder: str, model_dir: str | None, name: str, run_date: dt.date
) -> str | None:
    """The folder embed uses: ``model_dir`` for base; for latest the newest registered version
    trained as of ``run_date`` or earlier (none: ``model_dir``); else that version."""
    if encoder == "base":
        return model_dir
    if encoder == "latest":
        usable = [v for v, as_of in registered_versions(warehouse, name) if as_of <= run_date]
        if not usable:
            log.info("model.encoder latest: no version of %s as of %s; the base encoder", name, run_date)
            return model_dir
        return str(version_folder(warehouse, name, usable[-1]))
    return str(version_folder(warehouse, name, int(encoder)))
