"""Compare runs of bench_accuracy.py or bench_regression.py, per dataset and file.

    python benchmarks/compare_results.py base.jsonl candidate.jsonl [refs.jsonl:minirocket]
        [--model fastgrnn] [--metric accuracy|r2|rmse] [--input zscore|raw]
        [--datasets A,B] [--time]

Each argument is a ``--out`` file of ``bench_accuracy.py`` or
``bench_regression.py``, optionally with ``:MODEL`` to read another model than
``--model`` from it (e.g. the MiniRocket or MLP references). A file holding
several FastGRNN settings (``--append``) gives one column per setting. Each
cell is the mean over the seeds and, in brackets, the worst seed of
``--metric`` (by default accuracy for classification records, R² for
regression ones). Rows are (dataset, input); the last row is the mean over the
rows every column has (not for RMSE: RMSEs of different sets do not add up);
``--time`` adds the median fit seconds beside each cell.
"""

import argparse
import json
import os
import sys

import numpy as np

# Model names and input kinds the two benchmarks write (their MODELS and INPUTS).
MODELS = ("fastgrnn", "minirocket", "mlp", "early_stop", "logreg", "1nn", "gru", "ridge",
          "mlp_scaled")
INPUTS = ("zscore", "raw")
# metric -> (title, format, the worse of two values, whether rows may be averaged)
METRICS = {
    "accuracy": ("test accuracy", ".3f", min, True),
    "r2": ("test R²", ".3f", min, True),
    "rmse": ("test RMSE", ".4g", max, False),
}


def split_spec(spec, default_model):
    """``"path.jsonl:mlp"`` -> ("path.jsonl", "mlp"); a path alone takes the default model."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail in MODELS:
        return head, tail
    return spec, default_model


def read_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def columns(specs, default_model, inputs, datasets):
    """[(title, {(dataset, input): [records]})], one per file, model and FastGRNN setting."""
    out = []
    for spec in specs:
        path, model = split_spec(spec, default_model)
        by_setting = {}
        for r in read_records(path):
            if r["model"] != model or (inputs and r["input"] not in inputs):
                continue
            if datasets and r["dataset"] not in datasets:
                continue
            setting = r.get("label") or r.get("params") or ""
            by_setting.setdefault(setting, {}).setdefault((r["dataset"], r["input"]), []).append(r)
        if not by_setting:
            print(f"warning: no {model} records in {path}", file=sys.stderr)
        name = os.path.basename(path)
        for setting, cells in by_setting.items():
            title = f"{name}:{model}" if model != default_model else name
            if len(by_setting) > 1 or model in ("fastgrnn", "early_stop"):
                title += f" [{setting}]"
            out.append((title, cells))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="jsonl files, each optionally PATH:MODEL")
    parser.add_argument("--model", default="fastgrnn", choices=MODELS)
    parser.add_argument("--metric", choices=list(METRICS), default=None,
                        help="default: accuracy, or r2 for the records of bench_regression.py")
    parser.add_argument("--input", choices=INPUTS, default=None,
                        help="only this input kind (default: both)")
    parser.add_argument("--datasets", default=None, help="comma-separated names")
    parser.add_argument("--time", action="store_true", help="add the median fit seconds")
    args = parser.parse_args()

    inputs = [args.input] if args.input else None
    datasets = args.datasets.split(",") if args.datasets else None
    cols = columns(args.files, args.model, inputs, datasets)
    if not cols:
        raise SystemExit("no records to compare")
    first = next(iter(cols[0][1].values()))[0]
    metric = args.metric or ("accuracy" if "accuracy" in first else "r2")
    if any(metric not in r for _, cells in cols for rs in cells.values() for r in rs):
        raise SystemExit(f"some records have no {metric!r}: compare runs of one benchmark")
    title, spec, worst, averaged = METRICS[metric]
    rows = []
    for _, cells in cols:
        rows += [key for key in cells if key not in rows]
    order = {}
    for _, cells in cols:  # datasets in the order the first file ran them
        for dataset, _ in cells:
            order.setdefault(dataset, len(order))
    rows.sort(key=lambda key: (order[key[0]], INPUTS.index(key[1])))

    width = 26 if args.time else 18
    for i, (name, _) in enumerate(cols):
        print(f"[{i + 1}] {name}")
    print(f"{title}, mean (worst seed)")
    head = f"{'dataset':22s} {'input':6s} " + " ".join(
        f"{f'[{i + 1}]':>{width}s}" for i in range(len(cols)))
    print(head)
    print("-" * len(head))
    for key in rows:
        line = f"{key[0]:22s} {key[1]:6s}"
        for _, cells in cols:
            rs = cells.get(key)
            if not rs:
                text = "-"
            else:
                values = [r[metric] for r in rs]
                text = f"{np.mean(values):{spec}} ({worst(values):{spec}})"
                if args.time:
                    seconds = np.median([r["fit_s"] for r in rs])
                    text += f" {seconds:6.2f}s" if seconds < 10 else f" {seconds:6.1f}s"
            line += f" {text:>{width}s}"
        print(line)
    common = [key for key in rows if all(key in cells for _, cells in cols)]
    if common and averaged:
        line = f"{f'mean of {len(common)} rows':29s}"
        for _, cells in cols:
            means = [np.mean([r[metric] for r in cells[key]]) for key in common]
            line += f" {np.mean(means):>{width}.3f}"
        print("-" * len(head))
        print(line)


if __name__ == "__main__":
    main()
