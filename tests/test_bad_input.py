"""Bad input never gets past validation or crashes raw: the shipped configs and ``mo.sweep``'s
arguments, mutated by hypothesis, are either accepted or refused with one short mlorch error
naming the field, never a hang, a raw exception or a started process.

Validation entry points only (``load_cluster_config``, what ``mo.cluster`` calls first;
``load_sweep`` + ``make_plan``, what ``mlorch sweep`` and ``mo.sweep`` call before any
storage, lock or cluster), so an accepted input starts nothing either.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlorch as mo
from mlorch.config.load import load_cluster_config, load_yaml
from tests.conftest import ROOT
from tests.resources import sweep_flows as sf

MAX_MESSAGE = 600  # characters: "a few hundred", whatever the input
CLUSTER_FILES = sorted((ROOT / "configs" / "cluster").glob("*.yaml"))
SWEEP_FILE = ROOT / "configs" / "sweeps" / "digits.yaml"
COUNTS: dict[str, dict[str, int]] = {}

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**15), max_value=10**15)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["", "auto", "banana", "-1GB", "4GB", ":99999", "127.0.0.1:0", "bogus://x", "1e-4", "true"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _count(kind: str, verdict: str) -> None:
    COUNTS.setdefault(kind, {"accepted": 0, "refused": 0})[verdict] += 1


@pytest.fixture(autouse=True)
def elsewhere(tmp_path, monkeypatch):
    """Mutated relative paths (a storage named "auto") land in a scratch folder, never in the repository."""
    monkeypatch.chdir(tmp_path)


def _mutate(data: dict, field: str, value: object, mode: str) -> dict:
    out = dict(data)
    if mode == "replace":
        out[field] = value
    elif mode == "drop":
        out.pop(field, None)
    else:  # an extra, unknown field
        out[f"{field}_x"] = value
    return out


def _check_refusal(exc: mo.ConfigError, field: str, mode: str) -> None:
    text = str(exc)
    assert len(text) <= MAX_MESSAGE, text[:200]
    if mode == "extra":
        assert f"{field}_x" in text, text
    elif mode == "replace":
        assert field in text, text


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(CLUSTER_FILES),
    data=st.data(),
    value=values,
    mode=st.sampled_from(["replace", "replace", "replace", "drop", "extra"]),
)
def test_mutated_cluster_files_are_accepted_or_refused_by_name(path, data, value, mode, tmp_path_factory):
    original = yaml.safe_load(path.read_text())
    field = data.draw(st.sampled_from(sorted(k for k in original if k != "kind")))
    mutated = _mutate(original, field, value, mode)
    target = tmp_path_factory.mktemp("cluster") / path.name
    target.write_text(yaml.safe_dump(mutated))
    started = time.monotonic()
    try:
        cfg = load_cluster_config(target)
    except mo.ConfigError as exc:
        _count("cluster files", "refused")
        _check_refusal(exc, field, mode)
    else:
        _count("cluster files", "accepted")
        for name in ("n_workers", "gpus", "threads_per_worker"):  # what is accepted is sane
            got = getattr(cfg, name, None)
            assert not isinstance(got, bool) and (not isinstance(got, int) or 0 <= got <= 256)
    assert time.monotonic() - started < 2


def _shipped_sweep() -> dict:
    """The shipped sweep file's fields, with its target made absolute (the tests run elsewhere)."""
    data = yaml.safe_load(SWEEP_FILE.read_text())
    data["cluster"] = None
    file, name = data["target"].split(":")
    data["target"] = f"{ROOT / file}:{name}"
    return data


def _sweep_options() -> tuple[object, dict]:
    from mlorch.cli.sweep import load_sweep

    path = Path("shipped.yaml").resolve()
    path.write_text(yaml.safe_dump(_shipped_sweep()))
    return load_sweep(str(path))


class Accepted(Exception):
    """Raised where the sweep would start its cluster: every check before it passed."""


def _accept() -> None:
    raise Accepted


def _plan(target: object, options: dict) -> None:
    """What mo.sweep checks before it starts a cluster (the arguments, the storage URL, the lock)."""
    from mlorch.tuning.api import sweep

    options = {k: v for k, v in options.items() if k not in ("tracking_uri", "cluster", "progress")}
    try:
        sweep(target, cluster=_accept, progress=False, **options)
    except Accepted:
        return


SWEEP_FIELDS = ["n_trials", "max_concurrency", "seed", "name", "timeout", "trial_timeout", "metric", "direction",
                "sampler", "pruner", "resources", "tracking", "load_if_exists", "reuse_results", "storage"]  # fmt: skip


@settings(max_examples=150, deadline=3000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(SWEEP_FIELDS), value=values, mode=st.sampled_from(["replace", "replace", "replace", "extra"]))
def test_mutated_sweep_files_get_the_same_verdict_as_the_same_sweep_in_python(field, value, mode, tmp_path_factory, project):
    from mlorch.cli.sweep import load_sweep

    original = _shipped_sweep()
    mutated = _mutate(original, field, value, mode)
    path = tmp_path_factory.mktemp("sweep") / "sweep.yaml"
    path.write_text(yaml.safe_dump(mutated))
    yaml_verdict: str | None = None
    try:
        target, options = load_sweep(str(path))
        _plan(target, options)
    except mo.ConfigError as exc:
        yaml_verdict = str(exc)
        _check_refusal(exc, field, mode)
    _count("sweep files", "refused" if yaml_verdict else "accepted")
    if mode == "extra":
        return  # Python has no such thing as an unknown YAML field: a TypeError of the call
    # The same sweep written in Python: the same verdict, the same words (the CLI adds the file name).
    from mlorch.tuning.space import space_from_config

    target, options = _sweep_options()
    options["space"] = space_from_config(original["space"], "x")
    options[field] = yaml.safe_load(path.read_text())[field]  # the value exactly as the YAML file holds it
    python_verdict: str | None = None
    try:
        _plan(target, options)
    except mo.ConfigError as exc:
        python_verdict = str(exc)
    assert (yaml_verdict is None) == (python_verdict is None), (field, value, yaml_verdict, python_verdict)
    if python_verdict is not None:
        assert python_verdict in yaml_verdict  # type: ignore[operator]


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(SWEEP_FIELDS + ["metrics", "directions", "space", "cluster"]), value=values)
def test_mo_sweep_arguments_are_accepted_or_refused_by_name(field, value, project):
    kwargs = {"space": {"lr": mo.loguniform(1e-4, 1e-1)}, "metric": "val_loss", "n_trials": 2}
    if field == "metrics":
        kwargs.pop("metric")
    kwargs[field] = value
    try:
        if field == "cluster":
            from mlorch.tuning.api import _cluster

            if value is not None:
                _cluster(value)  # what mo.sweep does with it after the plan (None: the default local cluster)
        else:
            _plan(sf.pipeline, kwargs)
    except mo.ConfigError as exc:
        _count("mo.sweep arguments", "refused")
        assert len(str(exc)) <= MAX_MESSAGE
        assert field in str(exc) or field.rstrip("s") in str(exc), (field, str(exc))
    else:
        _count("mo.sweep arguments", "accepted")


# -- the issue's examples, each a test of its own ------------------------------------------
def write(tmp_path: Path, text: str | bytes, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("kind: [local]\n", "field 'kind': unknown cluster kind ['local']"),
        ("gpus: -1\n", "field 'gpus'"),
        ("n_workers: 1000000000000\n", "field 'n_workers'"),
        ("gpus: 1000000000000\n", "field 'gpus'"),
        ("memory_limit: banana\n", "memory_limit: 'banana' is not a byte size"),
        ("memory_limit: -1GB\n", "memory_limit: expected a positive byte size"),
        ("dashboard_address: ':99999'\n", "dashboard_address: ':99999' is not 'host:port'"),
        ("n_workers: '2'\n", "field 'n_workers'"),
        ("n_workers: true\n", "field 'n_workers'"),
    ],
)
def test_the_issues_cluster_examples(tmp_path, text, message):
    with pytest.raises(mo.ConfigError, match="^" + str(tmp_path).replace("/", "/") + r".*") as info:
        load_cluster_config(write(tmp_path, text))
    assert message in str(info.value) and len(str(info.value)) <= MAX_MESSAGE


def test_a_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(
            f"{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]"
        )
    lines.append("n_workers: *i")
    started = time.monotonic()
    with pytest.raises(mo.ConfigError, match="aliases are expanded") as info:
        load_cluster_config(write(tmp_path, "\n".join(lines) + "\n"))
    assert time.monotonic() - started < 2 and len(str(info.value)) <= MAX_MESSAGE


def test_deep_nesting_encoding_and_size_are_refused_by_the_loader(tmp_path):
    with pytest.raises(mo.ConfigError, match="nested"):
        load_yaml(write(tmp_path, "env: " + "[" * 5000 + "]" * 5000 + "\n"))
    with pytest.raises(mo.ConfigError, match=r"nested more than 50 levels"):
        load_yaml(write(tmp_path, "env: " + "[" * 60 + "]" * 60 + "\n"))
    with pytest.raises(mo.ConfigError, match=r"not UTF-8 text \(byte 6"):
        load_yaml(write(tmp_path, b"kind: \xff\xfe local\n"))
    with pytest.raises(mo.ConfigError, match="larger than 1024 KiB"):
        load_yaml(write(tmp_path, "# " + "x" * (2 << 20) + "\n"))


@pytest.mark.parametrize(
    "space, message",
    [
        ({"depth": {"intrange": [2, 8], "step": "abc"}}, "intrange step must be an integer, got 'abc'"),
        ({"depth": {"intrange": [2, 8], "step": 2.5}}, "intrange step must be an integer, got 2.5"),
        ({"depth": {"intrange": [2, 8], "log": "false"}}, "intrange log must be true or false, got 'false'"),
        ({"lr": {"uniform": [True, 1]}}, "expected a number, got True"),
    ],
)
def test_the_issues_space_examples(space, message):
    from mlorch.tuning.space import space_from_config

    with pytest.raises(mo.ConfigError, match="space") as info:
        space_from_config(space, "s.yaml")
    assert message in str(info.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"metrics": [], "metric": None}, "metrics: expected at least one name"),
        ({"direction": ""}, "direction: '' is neither 'minimize' nor 'maximize'"),
        ({"storage": "bogus://x"}, "storage: 'bogus://x' is not a database URL"),
        (
            {"storage": "sqlite:////nonexistent/dir/optuna.db"},
            "storage: folder '/nonexistent/dir' of the SQLite file does not exist",
        ),
        ({"resources": {"GPU": math.inf}}, "resources['GPU']: expected a positive number, got inf"),
        ({"n_trials": True}, "n_trials: expected an integer >= 1, got True"),
        ({"n_trials": "5"}, "n_trials: expected an integer >= 1, got '5'"),
        ({"seed": True}, "seed: expected an integer, got True"),
        ({"name": ""}, "name: expected a non-empty string"),
        ({"tracking": "yes"}, "tracking: expected True or False, got 'yes'"),
    ],
)
def test_the_issues_mo_sweep_examples(overrides, message, project):
    from mlorch.tuning.api import sweep

    kwargs = {"space": {"lr": mo.loguniform(1e-4, 1e-1)}, "metric": "val_loss", "n_trials": 2, "progress": False}
    kwargs.update(overrides)
    with pytest.raises(mo.ConfigError) as info:
        sweep(sf.pipeline, cluster=_accept, **kwargs)
    assert message in str(info.value)


def test_a_bad_tracking_uri_and_a_bad_target_fail_before_the_cluster(project, monkeypatch):
    from mlorch.cli.targets import load_target

    with pytest.raises(mo.ConfigError, match=r"cluster: expected a cluster handle.*got int"):
        mo.sweep(sf.pipeline, space={"lr": mo.uniform(0, 1)}, metric="val_loss", cluster=123, progress=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://x")
    with pytest.raises(mo.ConfigError, match=r"tracking_uri: 'bogus://x' is not a store MLflow opens"):
        mo.sweep(sf.pipeline, space={"lr": mo.uniform(0, 1)}, metric="val_loss", cluster=_accept)
    with pytest.raises(mo.ConfigError, match=r"target 'experiments.digitz:pipeline': no module named 'experiments.digitz'"):
        load_target("experiments.digitz:pipeline")
