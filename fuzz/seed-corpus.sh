#!/usr/bin/env bash
# Builds fuzz/corpus/TARGET/ from the repository's own small files. Each seed starts with
# the mode byte that the target reads first (see the header of each fuzz target).
# Run from the repository root after `dendrite train examples/xor.toml --out /tmp/xor
# --checkpoint-every-epochs 500`, which gives the checkpoint seeds.
set -euo pipefail

corpus=fuzz/corpus
checkpoint_run=${1:-/tmp/xor}
mkdir -p "$corpus"/{idx,csv_table,series_csv,image,model_json,safetensors,checkpoint,config_toml}

# Writes MODE (a byte in hex) followed by FILE to corpus TARGET, named by MODE and FILE.
seed() {
    local target=$1 mode=$2 file=$3
    local out="$corpus/$target/seed-$mode-$(basename "$file")"
    { printf "\\x$mode"; cat "$file"; } > "$out"
}

fixture=crates/dendrite/tests/fixtures/gzip-under-raw-name
for file in "$fixture"/reference/*-images-* ; do seed idx 00 "$file"; done
for file in "$fixture"/reference/*-labels-* ; do seed idx 01 "$file"; done
# The reference files are raw, so modes 02 and 03 compress them inside the target.
for file in "$fixture"/reference/*-images-* ; do seed idx 02 "$file"; done
for file in "$fixture"/reference/*-labels-* ; do seed idx 03 "$file"; done

for file in data/tiny/*.csv data/iris/*.csv crates/dendrite-cli/tests/fixtures/*/*.csv \
    crates/dendrite/tests/fixtures/log-zero/*.csv; do
    [ -f "$file" ] && [ "$(stat -c %s "$file")" -lt 65536 ] || continue
    seed csv_table 00 "$file"
    seed csv_table 11 "$file"
done

for file in crates/dendrite/tests/fixtures/series/*.csv data/air-passengers/*.csv; do
    [ -f "$file" ] && [ "$(stat -c %s "$file")" -lt 65536 ] || continue
    seed series_csv 00 "$file"
    seed series_csv 41 "$file"
    seed series_csv 62 "$file"
done

# data/mnist-png exists only after `dendrite export-images`; the fixtures are enough without it.
image_dirs=(crates/dendrite/tests/fixtures/image-folder)
[ -d data/mnist-png/train/0 ] && image_dirs+=(data/mnist-png/train/0)
find "${image_dirs[@]}" \
    -name '*.png' -o -name '*.jpg' -o -name '*.jpeg' | head -n 20 | while read -r file; do
    seed image 00 "$file"
    seed image 03 "$file"
done

cp fuzz/seeds/xor-model/model.json "$corpus/model_json/xor-model.json"
cp fuzz/seeds/xor-model/model.safetensors "$corpus/safetensors/xor-model.safetensors"

separator=$'\n--8<--\n'
for dir in "$checkpoint_run"/checkpoints/step-*; do
    [ -d "$dir" ] || continue
    for mode in 00 01 02; do
        out="$corpus/checkpoint/seed-$mode-$(basename "$dir")"
        {
            printf "\\x$mode"
            cat "$dir/state.json"; printf '%s' "$separator"
            cat "$dir/model.safetensors"; printf '%s' "$separator"
            cat "$dir/optimizer.safetensors"; printf '%s' "$separator"
            if [ "$mode" = 01 ]; then cat "$dir/checksums.json"; else cat "$dir/model.safetensors"; fi
        } > "$out"
    done
done

cp examples/*.toml "$corpus/config_toml/"
