"""GPU slots: one pinned worker per GPU, no two 1-GPU tasks on a slot at once, fractional packing."""

from __future__ import annotations

import itertools

import pytest

import mlorch as mo
from tests.resources import engine_flows as ef

pytestmark = pytest.mark.usefixtures("no_tracking")


def _overlap(a, b) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def test_one_worker_process_per_gpu_pinned_to_its_device(cluster):
    envs = cluster.client.run(lambda: __import__("os").environ.get("CUDA_VISIBLE_DEVICES"))
    assert sorted(envs.values()) == ["0", "1"]
    assert sorted(r.get("GPU") for r in cluster.worker_resources()) == [1, 1]


def test_gpu_tasks_never_share_a_slot_and_know_their_device(cluster):
    results = ef.gpu_jobs(n=6, seconds=0.3)
    assert all(len(gpu_ids) == 1 for gpu_ids, *_ in results)
    by_device = {}
    for r in results:
        by_device.setdefault(r[0], []).append(r)
    assert set(by_device) <= {(0,), (1,)}
    for device, jobs in by_device.items():
        for a, b in itertools.combinations(jobs, 2):
            assert not _overlap(a, b), f"two GPU tasks overlapped on device {device}"
    # both slots were used at the same time: the cluster is not serialising all GPU work
    assert any(_overlap(a, b) for a, b in itertools.combinations(results, 2))


def test_half_gpu_tasks_pack_two_per_device(cluster):
    results = ef.gpu_jobs(n=8, seconds=0.6, half=True)
    per_device = {}
    for r in results:
        per_device.setdefault(r[0], []).append(r)
    packed = [(a, b) for jobs in per_device.values() for a, b in itertools.combinations(jobs, 2) if _overlap(a, b)]
    assert packed, "0.5-GPU tasks never shared a device"
    for jobs in per_device.values():  # but never three on one device
        for a, b, c in itertools.combinations(jobs, 3):
            assert not (_overlap(a, b) and _overlap(b, c) and _overlap(a, c))


def test_unknown_resource_fails_fast_naming_the_task(cluster):
    with pytest.raises(mo.ResourceUnavailableError, match=r"task 'needs_tpu' asks for resources \{'TPU': 1.0\}"):
        ef.tpu_flow()


def test_cpu_tasks_on_gpu_workers_get_no_device(cluster):
    assert ef.cpu_jobs(4) == [(), (), (), ()]
