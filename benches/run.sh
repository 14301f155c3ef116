#!/usr/bin/env bash
# Measure the training throughput and peak memory of dendrite and PyTorch side by side, for one
# of three models (MODEL): the MLP or the LeNet-5 style CNN on MNIST digits, or an LSTM on
# windows of a synthetic series.
#
# For each thread count, the script runs dendrite and PyTorch RUNS times each, alternating
# between them. The order flips every round, so neither framework always runs first. Each run
# goes through `/usr/bin/time -v`, which reports its maximum resident set size. At the end the
# script prints Markdown tables of the medians. Run it from any folder. Settings come from
# the environment:
#
#   PYTHON       interpreter with torch and numpy (default python3)
#   RUNS         runs per framework and thread count (default 5)
#   EPOCHS       timed epochs per run, after one warm-up epoch (default 3)
#   THREADS      thread counts to measure (default "1 2")
#   MODEL        mlp (784-256-128-10, batch 64), lenet (the LeNet-5 style CNN, batch 64) or
#                lstm (LSTM with 64 units and a dense layer to 1 output, batch 32) (default mlp)
#   RESULTS_DIR  folder for the raw JSON lines and time reports (default: a new temp folder)
#   QUIET_WAIT   seconds to wait before each run for the CPUs to fall below 10% busy
#                (default 120), because other work on the machine skews the timings
#   CLI_ARGS     arguments for the peak-memory run of the dendrite command
#                (default "train examples/mnist-mlp.toml --out RESULTS_DIR/cli-run --quiet")

set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

python=${PYTHON:-python3}
runs=${RUNS:-5}
epochs=${EPOCHS:-3}
threads_list=${THREADS:-"1 2"}
model=${MODEL:-mlp}
quiet_wait=${QUIET_WAIT:-120}
target_dir=${CARGO_TARGET_DIR:-$root/target}
results_dir=${RESULTS_DIR:-$(mktemp -d -t dendrite-bench.XXXXXX)}
cli_args=${CLI_ARGS:-"train examples/mnist-mlp.toml --out $results_dir/cli-run --quiet"}
time_bin=/usr/bin/time

if ! "$time_bin" -v true >/dev/null 2>&1; then
    echo "error: $time_bin -v failed. Install GNU time (Debian: apt-get install time)." >&2
    exit 1
fi
if ! "$python" -c "import torch, numpy" >/dev/null 2>&1; then
    echo "error: $python cannot import torch and numpy. Create a virtualenv with" >&2
    echo "  python3 -m venv ~/torchenv && ~/torchenv/bin/pip install torch numpy" >&2
    echo "and run again with PYTHON=~/torchenv/bin/python" >&2
    exit 1
fi

echo "Building the benchmark binary and the dendrite command (release)..." >&2
cargo build --release --quiet -p dendrite-benches
bench_bin=$target_dir/release/mlp-throughput

# The throughput table does not need the command, so a failed build only skips its run.
cli_bin=$target_dir/release/dendrite
if ! cargo build --release --quiet -p dendrite-cli; then
    echo "warning: building the dendrite command failed, so its peak memory is not measured" >&2
    cli_bin=
fi

mkdir -p "$results_dir"
results=$results_dir/results.jsonl
: >"$results"

busy_limit_pct=10

# Prints the percentage of CPU time that all CPUs spent busy over the next half second, from
# /proc/stat.
cpu_busy_percent() {
    local before after
    before=$(head -n 1 /proc/stat)
    sleep 0.5
    after=$(head -n 1 /proc/stat)
    printf '%s\n%s\n' "$before" "$after" | awk '
        { idle[NR] = $5 + $6; total[NR] = 0; for (i = 2; i <= NF; i++) total[NR] += $i }
        END {
            elapsed = total[2] - total[1]
            busy = elapsed > 0 ? 100 * (elapsed - (idle[2] - idle[1])) / elapsed : 0
            printf "%.0f", busy
        }'
}

# Runs one benchmark command under `time -v` and appends its JSON line to the results file,
# with two fields added: max_rss_kb (maximum resident set size) and busy_before_pct (CPU use
# of the machine just before the run).
run_measured() {
    local label=$1
    shift
    local report=$results_dir/$label.time
    local output=$results_dir/$label.json

    # Wait for other work on the machine to finish, up to quiet_wait seconds.
    local busy waited=0
    busy=$(cpu_busy_percent)
    while ((busy > busy_limit_pct && waited < quiet_wait)); do
        sleep 0.5
        waited=$((waited + 1))
        busy=$(cpu_busy_percent)
    done
    if ((busy > busy_limit_pct)); then
        echo "  warning: the CPUs were $busy% busy before this run, so its throughput may read low" >&2
    fi

    "$time_bin" -v -o "$report" "$@" >"$output"
    local rss_kb
    rss_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$report")
    sed "s/}\$/,\"max_rss_kb\":$rss_kb,\"busy_before_pct\":$busy}/" "$output" >>"$results"
    echo "  $(tail -n 1 "$results")" >&2
}

run_dendrite() {
    run_measured "dendrite-t$1-r$2" "$bench_bin" --model "$model" --threads "$1" --epochs "$epochs"
}

run_pytorch() {
    run_measured "pytorch-t$1-r$2" "$python" benches/mlp_torch.py --model "$model" --threads "$1" --epochs "$epochs"
}

echo "Machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs" >&2
echo "Versions: $(rustc --version), torch $("$python" -c 'import torch; print(torch.__version__)')" >&2
echo "Raw results: $results" >&2

for threads in $threads_list; do
    for round in $(seq 1 "$runs"); do
        echo "threads $threads, round $round of $runs" >&2
        if ((round % 2 == 1)); then
            run_dendrite "$threads" "$round"
            run_pytorch "$threads" "$round"
        else
            run_pytorch "$threads" "$round"
            run_dendrite "$threads" "$round"
        fi
    done
done

echo
"$python" benches/summarize.py "$results"

echo
read -r -a cli_argv <<<"$cli_args"
if [[ -n $cli_bin && -x $cli_bin && -f examples/mnist-mlp.toml ]]; then
    echo "Peak memory of \`dendrite $cli_args\`:" >&2
    if ! "$time_bin" -v -o "$results_dir/cli.time" "$cli_bin" "${cli_argv[@]}" >"$results_dir/cli.log" 2>&1; then
        echo "error: dendrite $cli_args failed. Its output is in $results_dir/cli.log" >&2
        exit 1
    fi
    awk -F': ' '/Maximum resident set size/ { printf "dendrite CLI max RSS: %.1f MiB\n", $2 / 1024 }' \
        "$results_dir/cli.time"
    awk -F': ' '/Elapsed \(wall clock\)/ { print "dendrite CLI wall time: " $2 }' "$results_dir/cli.time"
else
    echo "dendrite CLI peak memory: skipped, because the dendrite command did not build" \
        "or examples/mnist-mlp.toml is missing"
fi
