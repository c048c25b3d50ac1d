"""One-off cross-check of the numpy references (and our losses) against pytorch-metric-learning.

Not a test (the suite must not need torch); run by hand, the second step where torch and PML 2.x
are installed (WORKSPACE.md records the result):

    python tests/pml_crosscheck.py dump /tmp/pml_values.npz
    /tmp/pmlvenv/bin/python tests/pml_crosscheck.py compare /tmp/pml_values.npz
"""

import ast
import os
import sys


def dump(path):
    import numpy as np

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.join(here, "siamese_tf")]
    import test_similarity_losses as t

    rng = np.random.default_rng(99)
    extra = [
        (f"random_big_{i}", rng.integers(0, 12, 256), rng.normal(size=(256, 32)).astype("f4"))
        for i in range(3)
    ]
    out = {}
    for name, labels, emb in t.BATCHES + extra:
        for loss_name, (fn, ref, kwargs) in t.LOSSES.items():
            key = f"{name}|{loss_name}"
            out[key + "|labels"] = np.reshape(labels, [-1])
            out[key + "|emb"] = emb
            out[key + "|ref"] = np.float64(ref(labels, emb, **kwargs))
            out[key + "|ours"] = np.float64(fn(labels, emb, **kwargs).numpy())
            out[key + "|kwargs"] = np.array(repr(kwargs))
    np.savez(path, **out)
    print(f"{len(out) // 5} cases written to {path}")


def compare(path):
    import numpy as np
    import pytorch_metric_learning
    import torch
    from pytorch_metric_learning import losses as pml

    data = np.load(path)
    keys = sorted({k.rsplit("|", 1)[0] for k in data.files})
    make = {
        "multi_similarity": pml.MultiSimilarityLoss,
        "circle": pml.CircleLoss,
        "supcon": pml.SupConLoss,
    }

    def rel(a, b):
        return abs(a - b) / abs(b) if b else abs(a)

    worst_ref = worst_ours = 0.0
    for key in keys:
        batch, loss_name = key.split("|")
        loss = make[loss_name.replace("_params", "")](
            **ast.literal_eval(str(data[key + "|kwargs"]))
        )
        labels = torch.tensor(data[key + "|labels"])
        value64 = float(loss(torch.tensor(data[key + "|emb"], dtype=torch.float64), labels))
        value32 = float(loss(torch.tensor(data[key + "|emb"], dtype=torch.float32), labels))
        ref, ours = float(data[key + "|ref"]), float(data[key + "|ours"])
        worst_ref = max(worst_ref, rel(ref, value64))
        worst_ours = max(worst_ours, rel(ours, value32))
        print(f"{key:48s} pml64={value64:.10g} ref={ref:.10g} pml32={value32:.8g} ours={ours:.8g}")
    print(
        f"PML {pytorch_metric_learning.__version__}, torch {torch.__version__}: {len(keys)} "
        f"cases; max relative difference: numpy reference vs PML (float64) {worst_ref:.2e}, "
        f"ours vs PML (float32) {worst_ours:.2e}"
    )


if __name__ == "__main__":
    {"dump": dump, "compare": compare}[sys.argv[1]](sys.argv[2])
