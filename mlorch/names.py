"""Names mlorch writes into other tools' records: MLflow tags, Optuna user attributes, run info keys.

One home so that a reader (the UI, a resumed driver, a test) and a writer never drift
apart. A leaf module: it imports nothing from mlorch.
"""

from __future__ import annotations

# -- Optuna: trial and study user attributes --------------------------------------------
RUN_ATTR = "mlflow_run_id"  # trial -> its MLflow child run
PARENT_ATTR = "mlflow_parent_run_id"  # study -> the sweep's MLflow parent run
ERROR_ATTR = "mlorch.error"  # why a trial failed (also an MLflow tag, see ERROR_TAG)
INTERRUPTED_ATTR = "mlorch.interrupted"  # closed because a driver stopped under it; not counted
LOST_ATTR = "mlorch.lost_attempts"  # attempts lost with a batch job, then run again
RETRY_OF_ATTR = "mlorch.retry_of"  # an enqueued rerun names the trial it repeats
DUPLICATE_ATTR = "mlorch.duplicate_of"  # a trial with exactly the parameters of an earlier one

# -- run info passed to flow runs and tasks ---------------------------------------------
RUN_ID_INFO = "mlflow_run_id"
TRACKING_URI_INFO = "mlflow_tracking_uri"
KEY_SALT_INFO = "mlorch.key_salt"  # mixed into every task key of the run: nothing is reused from other runs

# -- MLflow tags --------------------------------------------------------------------------
ERROR_TAG = "mlorch.error"
SWEEP_TAG = "mlorch.sweep"
FLOW_TAG = "mlorch.flow"
FLOW_RUN_TAG = "mlorch.flow_run_id"
FAILED_TASK_TAG = "mlorch.failed_task"
WORKER_DIED_TAG = "mlorch.worker_died"
KILLED_REASON_TAG = "mlorch.killed_reason"
GPUS_USED_TAG = "mlorch.gpus.used"
PRUNED_TAG = "mlorch.pruned"
INTERRUPTED_TAG = "mlorch.interrupted"
LOST_TAG = "mlorch.lost_attempts"
BEST_MODEL_TAG = "mlorch.best_model"
PID_TAG = "mlorch.pid"
HOST_TAG = "mlorch.host"
HEARTBEAT_TAG = "mlorch.heartbeat"
TASK_TAG = "mlorch.task"
TASK_RUN_TAG = "mlorch.run_id"
DUPLICATE_TAG = "mlorch.duplicate_of"
STUDY_TAG = "optuna.study_name"
TRIAL_NUMBER_TAG = "optuna.trial_number"
TRIAL_ID_TAG = "optuna.trial_id"
TRIAL_STATE_TAG = "optuna.state"
PRUNED_AT_TAG = "optuna.pruned_at_step"
USER_ATTR_TAG_PREFIX = "optuna.user_attr."  # + the trial's user attribute key
CONSTRAINTS_TAG = "optuna.constraints"
FEASIBLE_TAG = "optuna.feasible"
CONSTRAINTS_SYSTEM_ATTR = "constraints"  # where Optuna's constrained samplers keep a trial's constraints
BEST_TAG_PREFIX = "best."  # + a parameter of the sweep's best trial (a tag: it changes on resume)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow's UI: which view an experiment belongs to
TRAINING_KIND = "custom_model_development"  # ...the model-training view (runs, metrics), not GenAI traces
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
TRACKING_INFO = "mlorch.tracking"  # False in a flow run's info: record nothing (an untracked sweep's trial)
