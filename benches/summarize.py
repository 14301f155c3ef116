"""Print Markdown tables of medians from the JSON lines that benches/run.sh collects.

Each input line is the output of one run (dendrite's `mlp-throughput` or `mlp_torch.py`) with
the `max_rss_kb` and `busy_before_pct` fields that run.sh adds. Needs only the standard library.
"""

import json
import statistics
import sys
from collections import defaultdict

# Matches the warning threshold in run.sh.
BUSY_WARNING_PCT = 10

PHASE_KEYS = ["gather_us", "forward_us", "backward_us", "optimizer_us"]


def read_runs(path):
    """Group the records of a JSON-lines file by (threads, framework)."""
    runs = defaultdict(list)
    with open(path, encoding="utf-8") as file:
        for line in file:
            if line.strip():
                record = json.loads(line)
                runs[(record["threads"], record["framework"])].append(record)
    return runs


def median(records, key):
    return statistics.median(r[key] for r in records)


def print_throughput_table(runs):
    print(
        "| threads | dendrite samples/s | PyTorch samples/s | dendrite / PyTorch "
        "| dendrite step (us) | PyTorch step (us) | dendrite max RSS (MiB) "
        "| PyTorch max RSS (MiB) | runs |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for threads in sorted({t for t, _ in runs}):
        dendrite = runs[(threads, "dendrite")]
        pytorch = runs[(threads, "pytorch")]
        if not dendrite or not pytorch:
            continue

        dendrite_rate = median(dendrite, "samples_per_s")
        pytorch_rate = median(pytorch, "samples_per_s")
        print(
            f"| {threads} "
            f"| {dendrite_rate:,.0f} ({rate_range(dendrite)}) "
            f"| {pytorch_rate:,.0f} ({rate_range(pytorch)}) "
            f"| {dendrite_rate / pytorch_rate:.2f}x "
            f"| {median(dendrite, 'step_us'):,.0f} "
            f"| {median(pytorch, 'step_us'):,.0f} "
            f"| {median(dendrite, 'max_rss_kb') / 1024:.1f} "
            f"| {median(pytorch, 'max_rss_kb') / 1024:.1f} "
            f"| {len(dendrite)} + {len(pytorch)} |"
        )
    print()
    print("Samples/s: median (min to max) over the runs. Step and max RSS: medians.")


def rate_range(records):
    values = [r["samples_per_s"] for r in records]
    return f"{min(values):,.0f} to {max(values):,.0f}"


def print_phase_table(runs):
    """Print dendrite's phase times, if its records contain them."""
    rows = []
    for threads in sorted({t for t, framework in runs if framework == "dendrite"}):
        records = runs[(threads, "dendrite")]
        if records and all(key in r for r in records for key in PHASE_KEYS):
            cells = " | ".join(f"{median(records, key):,.0f}" for key in PHASE_KEYS)
            rows.append(f"| {threads} | {cells} |")
    if not rows:
        return

    print()
    print("| threads | gather (us) | forward + loss (us) | backward (us) | optimizer (us) |")
    print("|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print()
    print("Mean time per phase of one dendrite training step: medians over the runs.")


def print_busy_note(runs):
    all_runs = [r for group in runs.values() for r in group]
    busy = [r for r in all_runs if r.get("busy_before_pct", 0) > BUSY_WARNING_PCT]
    if busy:
        print()
        print(
            f"{len(busy)} of {len(all_runs)} runs started while the CPUs were more than "
            f"{BUSY_WARNING_PCT}% busy with other work, so their throughput may read low."
        )


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py RESULTS.jsonl")

    runs = read_runs(sys.argv[1])
    print_throughput_table(runs)
    print_busy_note(runs)
    print_phase_table(runs)


if __name__ == "__main__":
    main()
