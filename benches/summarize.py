"""Print a Markdown table of medians from the JSON lines that benches/run.sh collects.

Each input line is the output of one run (dendrite's `mlp-throughput` or `mlp_torch.py`) with
the `max_rss_kb` and `busy_before_pct` fields that run.sh adds. Needs only the standard library.
"""

import json
import statistics
import sys
from collections import defaultdict

# Matches the warning threshold in run.sh.
BUSY_WARNING_PCT = 10


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py RESULTS.jsonl")

    runs = defaultdict(list)
    with open(sys.argv[1], encoding="utf-8") as file:
        for line in file:
            if line.strip():
                record = json.loads(line)
                runs[(record["threads"], record["framework"])].append(record)

    def median(threads, framework, key):
        return statistics.median(r[key] for r in runs[(threads, framework)])

    def spread(threads, framework):
        values = [r["samples_per_s"] for r in runs[(threads, framework)]]
        return f"{min(values):,.0f} to {max(values):,.0f}"

    print(
        "| threads | dendrite samples/s | PyTorch samples/s | dendrite / PyTorch "
        "| dendrite step (us) | PyTorch step (us) | dendrite max RSS (MiB) "
        "| PyTorch max RSS (MiB) | runs |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for threads in sorted({t for t, _ in runs}):
        if not runs[(threads, "dendrite")] or not runs[(threads, "pytorch")]:
            continue
        dendrite_rate = median(threads, "dendrite", "samples_per_s")
        pytorch_rate = median(threads, "pytorch", "samples_per_s")
        print(
            f"| {threads} "
            f"| {dendrite_rate:,.0f} ({spread(threads, 'dendrite')}) "
            f"| {pytorch_rate:,.0f} ({spread(threads, 'pytorch')}) "
            f"| {dendrite_rate / pytorch_rate:.2f}x "
            f"| {median(threads, 'dendrite', 'step_us'):,.0f} "
            f"| {median(threads, 'pytorch', 'step_us'):,.0f} "
            f"| {median(threads, 'dendrite', 'max_rss_kb') / 1024:.1f} "
            f"| {median(threads, 'pytorch', 'max_rss_kb') / 1024:.1f} "
            f"| {len(runs[(threads, 'dendrite')])} + {len(runs[(threads, 'pytorch')])} |"
        )
    print()
    print("Samples/s: median (min to max) over the runs. Step and max RSS: medians.")

    all_runs = [r for group in runs.values() for r in group]
    busy = [r for r in all_runs if r.get("busy_before_pct", 0) > BUSY_WARNING_PCT]
    if busy:
        print(
            f"{len(busy)} of {len(all_runs)} runs started while the CPUs were more than "
            f"{BUSY_WARNING_PCT}% busy with other work, so their throughput may read low."
        )


if __name__ == "__main__":
    main()
