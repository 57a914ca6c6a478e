"""FedLoRA on the packaged MiniLM proxy in Flower's simulation engine (the Flower side of bench_flower.py).

Written the way a Flower user writes an HF + peft app (the NumPyClient / ``client_fn`` / ``server_fn``
style of Flower's ``quickstart-huggingface`` and ``flowertune-llm`` examples): every time a client is
sampled, ``client_fn`` builds its model (the proxy + ``peft.get_peft_model`` with a ``LoraConfig``) and
its tokenised data; ``fit`` loads the global LoRA factors and head, trains ``local-steps`` AdamW steps
on a shuffled ``DataLoader`` padded by ``DataCollatorWithPadding`` and returns the new factors and head;
the ``ServerApp`` runs ``FedAvg`` (every client every round, weighted by the clients' example counts)
and evaluates the global model once, after the last round, on the fixed evaluation subset. The run
goes through ``flwr.simulation.run_simulation`` on the Ray backend (2 CPUs, 1 CPU per client).

The workload is fedfleet's ``benchmarks/flower/fedfleet-fedlora.yaml``; the data split, partition,
evaluation subset and proxy model are computed with fedfleet's own functions (``learning.data``,
``learning.partition``, ``learning.models``, ``devices.rng``: numpy / torch / transformers only, no
``sim``), so both sides train on the same examples per client and evaluate on the same 400.

Run with the python of ``.venv-flower`` (flwr[simulation], torch, transformers, peft), with the repository
root on ``PYTHONPATH`` (that environment does not install fedfleet; Ray's worker processes, where the
ClientApps run, inherit the variable and import ``learning.*`` from there too):

    PYTHONPATH=. .venv-flower/bin/python benchmarks/flower/flower_fedlora.py [--rounds 5] [--clients 20] [--json out.json]

Prints the final accuracy and the host seconds; the last line is ``FLOWER_RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path

T_START = time.perf_counter()
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no network here
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.client import ClientApp, NumPyClient  # noqa: E402
from flwr.common import Context, ndarrays_to_parameters  # noqa: E402
from flwr.server import ServerApp, ServerAppComponents, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import DataCollatorWithPadding  # noqa: E402

from devices.rng import generator, stream_seed  # noqa: E402
from learning.data import DEFAULT_MAX_LEN, load_dataset, split_digest, train_test_split  # noqa: E402
from learning.models import load_proxy  # noqa: E402
from learning.partition import partition  # noqa: E402

# The workload of benchmarks/flower/fedfleet-fedlora.yaml (fedfleet's defaults where the file is silent)
SEED = 0
MODEL = "minilm"
DATASET = "rotten_tomatoes"
TEST_SIZE = 1000  # learning.test_size
EVAL_EXAMPLES = 400  # learning.eval.examples
EVAL_BATCH = 64  # learning.eval.batch_size
MAX_LEN = DEFAULT_MAX_LEN[DATASET]  # 64
LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 8, 16.0, 0.0
LORA_TARGETS = ["query", "value"]  # BERT's attention.self.query / .value (workload.lora_targets)
LR, WEIGHT_DECAY, GRAD_CLIP = 1e-3, 0.0, 1.0
LOCAL_STEPS, BATCH_SIZE = 10, 16

RESULT: dict = {}


# ----------------------------------------------------------------------------- task (model and data)
def get_model(num_labels: int):
    """The packaged MiniLM (loaded as fedfleet loads it: frozen, seeded head) with peft LoRA on query/value.

    ``task_type=SEQ_CLS`` makes peft train (and save) the classification head as well."""
    pm = load_proxy(MODEL, num_labels, stream_seed(SEED, "learn.init"))
    cfg = LoraConfig(task_type="SEQ_CLS", r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
                     target_modules=LORA_TARGETS)
    return get_peft_model(pm.model, cfg), pm.tokenizer


def get_parameters(model) -> list[np.ndarray]:
    return [v.cpu().numpy() for v in get_peft_model_state_dict(model).values()]


def set_parameters(model, parameters: list[np.ndarray]) -> None:
    keys = get_peft_model_state_dict(model).keys()
    state = OrderedDict((k, torch.from_numpy(np.copy(v))) for k, v in zip(keys, parameters, strict=True))
    set_peft_model_state_dict(model, state)


class Split:
    """fedfleet's split of the dataset: train/test, the IID partition over clients, the eval subset."""

    def __init__(self, num_partitions: int):
        ds = load_dataset(DATASET)
        self.texts, self.labels, self.num_labels = ds.texts, np.asarray(ds.labels), ds.n_classes
        self.train_idx, test_idx = train_test_split(len(ds.labels), TEST_SIZE, generator(SEED, "learn.split"))
        self.parts = partition(self.labels[self.train_idx], num_partitions, "iid", generator(SEED, "learn.partition"))
        sel = np.sort(generator(SEED, "learn.eval_subset").choice(len(test_idx), EVAL_EXAMPLES, replace=False))
        self.eval_idx = test_idx[sel]
        self.digests = {"train": split_digest(self.train_idx), "test": split_digest(test_idx)}

    def examples(self, idx: np.ndarray, tokenizer) -> list[dict]:
        enc = tokenizer([self.texts[i] for i in idx], truncation=True, max_length=MAX_LEN)
        return [{"input_ids": ids, "attention_mask": m, "labels": int(self.labels[i])}
                for ids, m, i in zip(enc["input_ids"], enc["attention_mask"], idx, strict=True)]

    def client_data(self, partition_id: int, tokenizer) -> list[dict]:
        return self.examples(self.train_idx[self.parts[partition_id]], tokenizer)


_SPLITS: dict[int, Split] = {}


def get_split(num_partitions: int) -> Split:
    """One Split per process (a Flower user would cache a FederatedDataset the same way)."""
    if num_partitions not in _SPLITS:
        _SPLITS[num_partitions] = Split(num_partitions)
    return _SPLITS[num_partitions]


def train(model, loader: DataLoader, steps: int, lr: float) -> float:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY)
    total, n = 0.0, 0
    for batch in loader:
        if n == steps:
            break
        out = model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        total += float(out.loss.detach())
        n += 1
    return total / max(n, 1)


@torch.no_grad()
def test(model, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    for batch in loader:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        y = batch["labels"]
        loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        n += len(y)
    return loss_sum / n, correct / n


# ----------------------------------------------------------------------------- ClientApp
class FlowerClient(NumPyClient):
    def __init__(self, model, tokenizer, trainset: list[dict], partition_id: int):
        self.model, self.trainset, self.partition_id = model, trainset, partition_id
        self.collator = DataCollatorWithPadding(tokenizer)

    def fit(self, parameters, config):
        set_parameters(self.model, parameters)
        torch.manual_seed(stream_seed(SEED, "flower.local", self.partition_id, int(config["server_round"])))
        loader = DataLoader(self.trainset, batch_size=int(config["batch_size"]), shuffle=True,
                            collate_fn=self.collator)
        loss = train(self.model, loader, int(config["local_steps"]), float(config["lr"]))
        return get_parameters(self.model), len(self.trainset), {"train_loss": loss,
                                                                "torch_threads": torch.get_num_threads()}


def client_fn(context: Context):
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    split = get_split(num_partitions)
    model, tokenizer = get_model(split.num_labels)
    trainset = split.client_data(partition_id, tokenizer)
    return FlowerClient(model, tokenizer, trainset, partition_id).to_client()


client_app = ClientApp(client_fn=client_fn)


# ----------------------------------------------------------------------------- ServerApp
def make_server_fn(num_rounds: int, num_clients: int):
    def server_fn(context: Context) -> ServerAppComponents:
        split = get_split(num_clients)
        torch.manual_seed(SEED)  # peft's lora_A init of the global model
        model, tokenizer = get_model(split.num_labels)
        evalset = split.examples(split.eval_idx, tokenizer)

        def evaluate(server_round: int, parameters, config):
            if server_round != num_rounds:  # evaluate once, after the last round
                return None
            t0 = time.perf_counter()
            set_parameters(model, parameters)
            loader = DataLoader(evalset, batch_size=EVAL_BATCH, collate_fn=DataCollatorWithPadding(tokenizer))
            loss, acc = test(model, loader)
            RESULT.update(round=server_round, accuracy=acc, loss=loss, eval_s=time.perf_counter() - t0)
            print(f"round {server_round}: accuracy {acc:.4f}, test loss {loss:.4f}", flush=True)
            return loss, {"accuracy": acc}

        def fit_metrics(results: list[tuple[int, dict]]) -> dict:
            n = sum(k for k, _ in results)
            out = {"train_loss": sum(k * m["train_loss"] for k, m in results) / n,
                   "client_torch_threads": max(int(m["torch_threads"]) for _, m in results)}
            RESULT.update(out)
            return out

        def fit_config(server_round: int) -> dict:
            return {"server_round": server_round, "local_steps": LOCAL_STEPS, "batch_size": BATCH_SIZE, "lr": LR}

        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,  # no federated evaluation: the server evaluates the global model
            min_fit_clients=num_clients,
            min_available_clients=num_clients,
            on_fit_config_fn=fit_config,
            fit_metrics_aggregation_fn=fit_metrics,
            evaluate_fn=evaluate,
            initial_parameters=ndarrays_to_parameters(get_parameters(model)),
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=num_rounds))

    return server_fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs given to Ray")
    ap.add_argument("--cpus-per-client", type=float, default=1.0)
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    a = ap.parse_args()
    import flwr  # noqa: PLC0415

    run_simulation(
        server_app=ServerApp(server_fn=make_server_fn(a.rounds, a.clients)),
        client_app=client_app,
        num_supernodes=a.clients,
        backend_name="ray",
        backend_config={"client_resources": {"num_cpus": a.cpus_per_client, "num_gpus": 0.0},
                        "init_args": {"num_cpus": a.cpus}},
    )
    split = get_split(a.clients)
    out = {"flwr_version": flwr.__version__, "rounds": a.rounds, "clients": a.clients,
           "accuracy": RESULT.get("accuracy"), "test_loss": RESULT.get("loss"), "eval_s": RESULT.get("eval_s"),
           "last_train_loss": RESULT.get("train_loss"), "client_torch_threads": RESULT.get("client_torch_threads"),
           "train_digest": split.digests["train"], "test_digest": split.digests["test"],
           "host_s": time.perf_counter() - T_START}
    if out["accuracy"] is None:
        sys.exit("Flower simulation finished without a final evaluation (see the log above)")
    print(f"flower: final accuracy {out['accuracy']:.4f}, host seconds {out['host_s']:.1f}", flush=True)
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    print("FLOWER_RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
