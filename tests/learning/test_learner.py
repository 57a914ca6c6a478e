"""The real learner inside the simulator, on tiny random proxies (fast), plus one packaged-MiniLM run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fleet_helpers import base_scenario

from sim.loader import ScenarioError, validate
from sim.runner import run_scenario, simulate


def learning_scenario(model: str = "tiny-bert", **learning) -> dict:
    d = base_scenario()
    d["fleet"]["groups"] = [
        {"type": "tx2", "count": 2, "power_modes": ["MAXN"], "placement": "lan"},
        {"type": "agx_xavier", "count": 1, "power_modes": ["MAXN"], "placement": "lan"},
    ]
    d["workload"].update(seq_len=32, lora_targets=["query", "key", "value", "attn_out", "ffn_in", "ffn_out"])
    d["training"] = {"rounds": 3, "local_steps": 3}
    d["algorithm"] = {"name": "fixed", "params": {"prune_target": 0.5, "rank": 4, "batch_size": 8}}
    d["learning"] = {"kind": "real", "model": model, "train_examples": 300, "test_size": 60,
                     "partition": {"kind": "dirichlet", "alpha": 1.0, "min_size": 8}, **learning}
    return d


def run(d: dict):
    sim, out = simulate(validate(d))
    return sim, out


def test_real_learning_prunes_trains_and_evaluates():
    sim, out = run(learning_scenario())
    r, dev = out.rounds, out.device_rounds
    assert r["accuracy"].notna().all() and r["test_loss"].notna().all()
    assert (dev["loss_before"] > 0).all() and (dev["loss_after"] > 0).all()
    assert (dev["lora_update_norm"] > 0).all()
    assert (dev["proxy_peak_mem_bytes"] > 0).all()
    assert (dev["lora_rank_reported"] == dev["lora_rank"]).all()  # no rank self-pruning planned
    # the proxy really reaches the plan's sparsity: floor(p * 4) heads, floor(p * 128) channels per layer
    last = dev[dev["round"] == 2]
    assert np.allclose(last["proxy_attn_sparsity"], 0.5) and np.allclose(last["proxy_ffn_sparsity"], 0.5)
    first = dev[dev["round"] == 0]  # p = 1/6: no whole head yet, 21 of 128 channels
    assert np.allclose(first["proxy_attn_sparsity"], 0.0) and np.allclose(first["proxy_ffn_sparsity"], 21 / 128)
    lr = sim.learner
    assert all(s.masks.sparsity_parts() == (0.5, 0.5) for s in lr.devices)
    assert len(lr.eval_rows) == 3 * 3
    info = lr.info()
    assert info["n_train"] == 300 and info["n_test"] == 60 and len(info["test_digest"]) == 16


def test_same_seed_same_accuracies_and_losses():
    d = learning_scenario()
    _, a = run(d)
    _, b = run(d)
    pd.testing.assert_frame_equal(a.rounds, b.rounds)
    pd.testing.assert_frame_equal(a.device_rounds, b.device_rounds)
    d["seed"] = 1
    _, c = run(d)
    assert not np.allclose(a.device_rounds["loss_after"], c.device_rounds["loss_after"])


@pytest.mark.parametrize("agg,resize", [("zero_pad", "truncate"), ("fedavg", "svd"), ("svd", "truncate")])
def test_aggregators_and_resize_run(agg, resize):
    d = learning_scenario(resize=resize)
    d["algorithm"]["params"]["aggregator"] = agg
    d["training"]["rounds"] = 2
    sim, out = run(d)
    assert out.rounds["accuracy"].notna().all()
    assert sim.learner.glob  # a global update exists after aggregation


def test_heterogeneous_ranks_with_random_strategy_and_tiny_llama():
    d = learning_scenario("tiny-llama")
    d["algorithm"] = {"name": "random", "params": {"prune_ratios": [0.0, 0.5], "ranks": [2, 4, 8], "batch_size": 8,
                                                   "reach_target_by": 2}}
    d["training"]["rounds"] = 2
    sim, out = run(d)
    dev = out.device_rounds
    assert dev["lora_rank"].nunique() > 1
    last = dev[dev["round"] == 1]
    assert np.allclose(last["proxy_attn_sparsity"], 0.5)  # 1 of 2 key/value groups, with its query heads


@pytest.mark.parametrize("criterion,order,scope", [("magnitude", "prune_first", "layer"),
                                                   ("random", "prune_first", "global"),
                                                   ("lora_grad", "tune_prune_tune", "layer")])
def test_importance_options(criterion, order, scope):
    d = learning_scenario(importance={"criterion": criterion, "order": order, "scope": scope})
    d["training"]["rounds"] = 2
    sim, out = run(d)
    assert np.allclose(out.device_rounds.query("round == 1")["proxy_ffn_sparsity"], 0.5)


def test_different_criteria_prune_different_groups():
    masks = {}
    for crit in ("lora_grad", "magnitude", "random"):
        d = learning_scenario(importance={"criterion": crit})
        d["training"]["rounds"] = 2
        sim, _ = run(d)
        masks[crit] = sim.learner.devices[0].masks.key()
    assert len(set(masks.values())) == 3


def test_failed_device_keeps_its_old_state():
    d = learning_scenario()
    d["dynamics"]["dropout"] = {"prob": 0.6}
    d["training"]["rounds"] = 2
    sim, out = run(d)
    dev = out.device_rounds
    for i, s in enumerate(sim.learner.devices):
        ok = dev[(dev["device_index"] == i) & (dev["status"] == "ok")]
        want = ok["prune_ratio"].max() if len(ok) else 0.0
        # committed sparsity = that of the last credited round (floor(p*128)/128 per layer)
        assert s.masks.sparsity_parts()[1] == pytest.approx(np.floor(want * 128 + 1e-9) / 128)


def test_eval_subset_and_device_sample():
    d = learning_scenario(eval={"examples": 20, "devices": 2})
    d["training"]["rounds"] = 2
    sim, out = run(d)
    ev = pd.DataFrame(sim.learner.eval_rows)
    assert len(ev) == 4 and ev.groupby("round").size().eq(2).all()
    assert sim.learner.info()["n_eval"] == 20


def test_eval_early_is_sparse_up_to_its_round_and_leaves_training_unchanged():
    """training.eval_early: rounds 2 and 4 (every 2 up to round 4), then every round; the evaluations it
    keeps and the training are those of the every-round schedule, bit for bit."""
    d = learning_scenario()
    d["training"].update(rounds=6, local_steps=2, eval_every=1)
    _, dense = run(d)
    d["training"]["eval_early"] = {"until_round": 4, "every": 2}
    _, sparse = run(d)
    assert sparse.rounds.loc[sparse.rounds["accuracy"].notna(), "round"].tolist() == [1, 3, 4, 5]
    pd.testing.assert_frame_equal(sparse.device_rounds, dense.device_rounds)
    kept = dense.rounds["round"].isin([1, 3, 4, 5])
    pd.testing.assert_series_equal(sparse.rounds.loc[kept, "accuracy"], dense.rounds.loc[kept, "accuracy"])


def test_training_evaluates_schedule():
    from sim.scenario import Training

    t = Training(rounds=30, eval_every=1, eval_early={"until_round": 24, "every": 4})
    assert [r + 1 for r in range(30) if t.evaluates(r)] == [4, 8, 12, 16, 20, 24, 25, 26, 27, 28, 29, 30]
    t = Training(rounds=7, eval_every=3)
    assert [r + 1 for r in range(7) if t.evaluates(r)] == [3, 6, 7]  # the last round always


def test_lora_layers_subset_maps_to_proxy_layers():
    d = learning_scenario()
    d["algorithm"]["params"]["lora_depth"] = 3  # top 3 of RoBERTa-base's 12 layers -> proxy layer 1 of 2
    d["training"]["rounds"] = 1
    sim, _ = run(d)
    assert {k[0] for k in sim.learner.glob} == {1}


@pytest.mark.parametrize("learning,key", [
    ({"test_size": 20000}, "learning.test_size"),
    ({"partition": {"min_size": 200}}, "learning.partition.min_size"),
    ({"eval": {"examples": 100}}, "learning.eval.examples"),
    ({"dataset": "imdb"}, "learning.dataset"),
    ({"importance": {"criterion": "taylor"}}, "learning.importance.criterion"),
])
def test_bad_learning_settings_name_the_key(learning, key):
    d = learning_scenario()
    for k, v in learning.items():
        if isinstance(v, dict):
            d["learning"].setdefault(k, {}).update(v)
        else:
            d["learning"][k] = v
    with pytest.raises(ScenarioError, match=key.replace(".", r"\.")):
        validate(d)


def test_run_dir_has_learning_tables(tmp_path):
    sc = validate(learning_scenario())
    res = run_scenario(sc, out_root=tmp_path, progress=False)
    ev = pd.read_parquet(res.run_dir / "evals.parquet")
    parts = pd.read_parquet(res.run_dir / "partition.parquet")
    assert set(ev["device_type"].astype(str)) == {"tx2", "agx_xavier"}
    assert parts["n_samples"].sum() == 300
    assert (parts[["label_negative", "label_positive"]].sum(axis=1) == parts["n_samples"]).all()
    assert res.summary["learning_info"]["dataset"] == "rotten_tomatoes"


def test_packaged_minilm_end_to_end(tmp_path):
    """The real default proxy on a small subset: two rounds, pruning 0.25, accuracy recorded."""
    d = learning_scenario("minilm", train_examples=96, test_size=32)
    d["training"] = {"rounds": 2, "local_steps": 2}
    d["algorithm"]["params"]["prune_target"] = 0.25
    sim, out = run(d)
    assert sim.learner.adapter.attn_groups == 12
    dev = out.device_rounds
    assert np.allclose(dev.query("round == 1")["proxy_attn_sparsity"], 3 / 12)
    assert out.rounds["accuracy"].between(0, 1).all()


def test_proxy_layers_truncates_and_rejects_too_many():
    from learning.models import load_proxy
    from learning.structure import ArchAdapter

    pm = load_proxy("minilm", 2, seed=0, layers=2)
    assert ArchAdapter.for_model(pm.model).num_layers == 2 and pm.model.config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="allowed 1-6"):
        load_proxy("minilm", 2, seed=0, layers=7)
