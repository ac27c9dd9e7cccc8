"""What the registry and the tracking store say about one registered model version.

Read through `MlflowClient` (any store). Everything here is untrusted input: the
caller checks each value (hash formats, threshold range) before using it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mlvs.backends.mlflow.store import registry_uri, server_problem, tracking_uri
from mlvs.errors import BadInputError, ExternalToolError
from mlvs.paths import ProjectPaths


@dataclass(frozen=True)
class VersionDetails:
    """A registered version: its number, the run that logged it, and that run's tags and params."""

    model_name: str
    version: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def version_details(paths: ProjectPaths, model_name: str, version: str) -> VersionDetails:
    """The details of `model_name` version `version`; BadInputError when it is not registered."""
    problem = server_problem(paths, registry_uri(paths))
    if problem is not None:
        raise ExternalToolError(f"the MLflow registry does not answer ({problem})")
    # deferred: mlflow (~1.7 s) is imported only when this runs
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(paths), registry_uri=registry_uri(paths))
    try:
        found = client.get_model_version(model_name, version)
    except mlflow.exceptions.MlflowException as error:
        if getattr(error, "error_code", None) in (
            "RESOURCE_DOES_NOT_EXIST",
            "INVALID_PARAMETER_VALUE",
        ):
            raise BadInputError(
                f"version {version} of registered model {model_name!r} does not exist; "
                "`mlvs registry history` shows the versions the aliases have pointed at"
            ) from None
        raise ExternalToolError(
            f"the MLflow registry could not be read ({str(error).splitlines()[0][:200]})"
        ) from None
    if not found.run_id:
        return VersionDetails(model_name, str(found.version), None)
    try:
        run = client.get_run(found.run_id)
    except mlflow.exceptions.MlflowException as error:
        raise ExternalToolError(
            f"the run {found.run_id} of version {version} could not be read "
            f"({str(error).splitlines()[0][:200]})"
        ) from None
    return VersionDetails(
        model_name, str(found.version), found.run_id, dict(run.data.tags), dict(run.data.params)
    )


def register_version(
    paths: ProjectPaths,
    model_name: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, str],
) -> str:
    """Register a new version of `model_name` for a model file mlvs keeps itself; return its number.

    The version's run holds `tags` (the file's hashes) and `params`; the model is not
    logged to MLflow (`mlvs.stages.versions` finds its file by those hashes).
    """
    # deferred: mlflow (~1.7 s) is imported only when this runs
    import mlflow
    from mlflow.entities import Param, RunTag

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(paths), registry_uri=registry_uri(paths))
    experiment = client.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME", "mlvs"))
    experiment_id = experiment.experiment_id if experiment is not None else "0"
    run = client.create_run(experiment_id, run_name=run_name)
    client.log_batch(
        run.info.run_id,
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run.info.run_id)
    found = client.create_model_version(
        model_name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    return str(found.version)
