"""Placing the job's pools before any work starts (pure rules of m3ddm_ray.distributed.resources)."""

from __future__ import annotations

import pytest

from m3ddm_ray.distributed.config import DEFAULTS, config_hash, load_config
from m3ddm_ray.distributed.resources import ResourceError, local_gpu_count, plan_pools, resolve_dtype

from conftest import PINNED_HUB


def asks(plan):
    return {s: (a.count, a.num_cpus, a.num_gpus) for s, a in plan.asks.items()}


def test_default_config_on_a_2_cpu_machine_without_gpu_asks_no_gpu_and_fits():
    plan = plan_pools(DEFAULTS["stages"], "auto", "auto", {"CPU": 2.0})
    assert (plan.device, plan.dtype) == ("cpu", "fp32")
    assert asks(plan) == {"prepare": (1, 0.5, 0.0), "coarse": (1, 0.5, 0.0), "fine": (1, 0.5, 0.0),
                          "finalize": (1, 0.5, 0.0)}
    assert sum(a.num_cpus * a.count for a in plan.asks.values()) <= 2.0


def test_default_config_on_one_gpu_shares_it_between_the_coarse_and_fine_actor():
    plan = plan_pools(DEFAULTS["stages"], "auto", "auto", {"CPU": 16.0, "GPU": 1.0})
    assert (plan.device, plan.dtype) == ("cuda", "fp16")
    assert plan.asks["coarse"].num_gpus == plan.asks["fine"].num_gpus == 0.5
    assert all(plan.asks[s].num_cpus == 1.0 for s in plan.asks)


def test_enough_gpus_give_one_per_model_actor_and_too_few_pack_them():
    stages = {**DEFAULTS["stages"], "fine": {**DEFAULTS["stages"]["fine"], "num_actors": 7}}
    assert asks(plan_pools(stages, "cuda", "bf16", {"CPU": 64, "GPU": 8}))["fine"] == (7, 1.0, 1.0)
    packed = plan_pools(stages, "cuda", "auto", {"CPU": 64, "GPU": 4})  # 8 actors on 4 GPUs: 2 per GPU
    assert packed.asks["fine"].num_gpus == packed.asks["coarse"].num_gpus == 0.5


def test_gpu_asked_and_absent_names_the_fix():
    with pytest.raises(ResourceError, match=r"device is cuda but the cluster has no GPU.*--device cpu"):
        plan_pools(DEFAULTS["stages"], "cuda", "auto", {"CPU": 8.0})
    stages = {**DEFAULTS["stages"], "coarse": {"num_actors": 1, "num_gpus": 1}, "fine": {"num_actors": 1, "num_gpus": 1}}
    with pytest.raises(ResourceError) as err:
        plan_pools(stages, "auto", "auto", {"CPU": 8.0, "GPU": 1.0})
    msg = str(err.value)
    assert "= 2 GPUs, the cluster has 1" in msg and "stages.coarse.num_gpus=auto" in msg and "\n" not in msg


def test_cpus_over_asked_names_stage_ask_cluster_and_fix():
    stages = {**DEFAULTS["stages"], "coarse": {"num_actors": 1, "num_cpus": 1, "num_gpus": 0},
              "fine": {"num_actors": 1, "num_cpus": 1, "num_gpus": 0},
              "prepare": {"num_cpus": 1}, "finalize": {"num_cpus": 1}}
    with pytest.raises(ResourceError) as err:
        plan_pools(stages, "cpu", "auto", {"CPU": 2.0})
    msg = str(err.value)
    assert "the job needs 1 x 1 CPU (prepare) + 1 x 1 CPU (coarse) + 1 x 1 CPU (fine) + 1 x 1 CPU (finalize) = 4 CPUs" in msg
    assert "the cluster has 2" in msg and "num_cpus=auto" in msg
    # explicit asks that leave no room for the auto ones
    with pytest.raises(ResourceError, match=r"cannot be placed: the stages with explicit num_cpus \(coarse 1 x 3\) ask 3 CPUs"):
        plan_pools({"coarse": {"num_actors": 1, "num_cpus": 3}}, "cpu", "auto", {"CPU": 2.0})


def test_explicit_values_that_fit_are_kept_and_autos_fill_the_rest():
    stages = {"coarse": {"num_actors": 1, "num_cpus": 0.25}, "fine": {"num_actors": 2, "num_cpus": "auto"}}
    plan = plan_pools(stages, "cpu", "fp32", {"CPU": 2.0})
    # 0.25 fixed; 1.75 left for fine x2 + prepare + finalize = 4 autos -> 0.4375 each
    assert asks(plan) == {"prepare": (1, 0.4375, 0.0), "coarse": (1, 0.25, 0.0), "fine": (2, 0.4375, 0.0),
                          "finalize": (1, 0.4375, 0.0)}


def test_autoscaling_turns_shortfalls_into_notes():
    plan = plan_pools(DEFAULTS["stages"], "cuda", "auto", {"CPU": 2.0}, autoscaling=True)
    assert plan.device == "cuda" and plan.asks["fine"].num_gpus == 1.0
    assert any("no GPU" in n for n in plan.notes)


def test_bad_values_are_rejected_by_name():
    with pytest.raises(ResourceError, match=r"stages.fine.num_cpus='many'"):
        plan_pools({"fine": {"num_cpus": "many"}}, "cpu", "auto", {"CPU": 4})
    with pytest.raises(ResourceError, match=r"stages.fine.num_actors=0"):
        plan_pools({"fine": {"num_actors": 0}}, "cpu", "auto", {"CPU": 4})
    with pytest.raises(ResourceError, match=r"num_gpus=1.5: a fraction must be below 1"):
        plan_pools({"fine": {"num_gpus": 1.5}}, "cuda", "auto", {"CPU": 4, "GPU": 4})
    with pytest.raises(ResourceError, match="device='tpu'"):
        plan_pools({}, "tpu", "auto", {"CPU": 4})


def _auto_prepare(stages):
    return {**stages, "prepare": {**(stages.get("prepare") or {}), "concurrency": "auto"}}


def test_prepare_concurrency_auto_fits_the_cpus_the_pools_and_a_finalize_task_leave():
    assert DEFAULTS["stages"]["prepare"]["concurrency"] == "auto"  # the default (finalize: Ray Data decides)
    assert DEFAULTS["stages"]["finalize"]["concurrency"] is None
    assert plan_pools(DEFAULTS["stages"], "auto", "auto", {"CPU": 2.0}).asks["prepare"].concurrency == 1
    # 2 CPUs, defaults: 4 x 0.5 CPU, so 0.5 free for prepare -> one prepare task at a time
    plan = plan_pools(_auto_prepare(DEFAULTS["stages"]), "auto", "auto", {"CPU": 2.0})
    assert plan.asks["prepare"].concurrency == 1 and plan.asks["finalize"].concurrency is None
    assert plan.asks["coarse"].concurrency is None  # actor pools are sized by num_actors
    # tiny-cpu.yaml on 4 logical CPUs: 1 + 1 CPU actors, 1 finalize -> 1
    tiny = load_config("configs/tiny-cpu.yaml")
    assert plan_pools(_auto_prepare(tiny["stages"]), tiny["device"], "auto",
                      {"CPU": 4.0}).asks["prepare"].concurrency == 1
    # a 16-CPU GPU node: 16 - 2 actors - 1 finalize = 13 prepare tasks
    assert plan_pools(_auto_prepare(DEFAULTS["stages"]), "auto", "auto",
                      {"CPU": 16.0, "GPU": 1.0}).asks["prepare"].concurrency == 13
    # fractional tasks: 8 CPUs, actors 2 x 1, finalize 1, prepare 0.5 each -> 5 / 0.5 = 10
    stages = {**DEFAULTS["stages"], "prepare": {"num_cpus": 0.5, "concurrency": "auto"}}
    assert plan_pools(stages, "cpu", "auto", {"CPU": 8.0}).asks["prepare"].concurrency == 10


def test_task_concurrency_null_whole_numbers_autoscaling_and_bad_values():
    def prep(value, **kw):
        stages = {**DEFAULTS["stages"], "prepare": {"num_cpus": "auto", "concurrency": value}}
        return plan_pools(stages, "cpu", "auto", {"CPU": 8.0}, **kw).asks["prepare"].concurrency

    assert prep(None) is None and prep(3) == 3 and prep(2.0) == 2 and prep("AUTO") == 5
    assert prep("auto", autoscaling=True) is None  # the cluster may grow: Ray Data decides
    zero = {**DEFAULTS["stages"], "prepare": {"num_cpus": 0, "concurrency": "auto"}}
    assert plan_pools(zero, "cpu", "auto", {"CPU": 8.0}).asks["prepare"].concurrency is None
    for bad in (0, -1, 1.5, True, "many"):
        with pytest.raises(ResourceError, match=r"stages.prepare.concurrency=.*whole number >= 1, 'auto'"):
            prep(bad)


def test_resolve_runtime_writes_the_concurrency_into_the_config_and_is_idempotent():
    from m3ddm_ray.distributed.job import resolve_runtime

    asked = dict(DEFAULTS, stages=_auto_prepare(DEFAULTS["stages"]))
    cfg, _ = resolve_runtime(asked, {"CPU": 2.0})
    assert cfg["stages"]["prepare"]["concurrency"] == 1 and cfg["stages"]["finalize"]["concurrency"] is None
    again, _ = resolve_runtime(cfg, {"CPU": 2.0})
    assert again["stages"] == cfg["stages"]
    assert asked["stages"]["prepare"]["concurrency"] == "auto"  # the config given is not changed


def test_resolve_dtype_matches_the_model_loader_rule():
    assert [resolve_dtype("auto", d) for d in ("cuda", "cpu")] == ["fp16", "fp32"]
    assert resolve_dtype("bfloat16", "cuda") == "bf16"
    with pytest.raises(ResourceError):
        resolve_dtype("int8", "cpu")


def test_local_gpu_count_respects_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpu_count() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert local_gpu_count() == 0


def test_config_hash_separates_fp16_cuda_from_fp32_cpu_and_ignores_memory_knobs():
    cpu = load_config(**PINNED_HUB, device="cpu")
    cuda = load_config(**PINNED_HUB, device="cuda")
    assert config_hash(cpu) != config_hash(cuda)  # dtype auto resolves differently: other output names
    assert config_hash(load_config(**PINNED_HUB, device="cpu", dtype="fp32")) == config_hash(cpu)
    assert config_hash(load_config(**PINNED_HUB, device="cuda", dtype="fp16")) == config_hash(cuda)
    assert config_hash(load_config(**PINNED_HUB, device="cpu", vae_batch_size=2)) == config_hash(cpu)
    assert config_hash(load_config(**PINNED_HUB, device="cpu", sampler__steps=20)) != config_hash(cpu)
