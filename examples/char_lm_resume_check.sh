#!/bin/sh
# char_lm_resume_check.sh CHAR_LM [DIR] - checks char_lm's checkpoints: for each
# optimizer, N steps in one process and N/2 steps + --save, then --resume in a
# fresh process for the other N/2 steps, must give byte-identical adapters and
# optimizer state (the checkpoint files, PATH and the model's PATH.rite, are
# compared with cmp).
# Exit status: 0 identical, 1 different or an error, 77 a word list is missing.
set -u
prog=${1:?usage: char_lm_resume_check.sh CHAR_LM [DIR]}
dir=${2:-char_lm_resume_check}
steps=40
half=$((steps / 2))
mkdir -p "$dir" || exit 1

run() {
    "$prog" --quick --base "$dir/base.bin" --out "$dir/out" "$@" >"$dir/log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        cat "$dir/log"
        exit $rc   # 77 (a word list is missing) is passed on
    fi
}

for opt in rite adamw; do
    rm -f "$dir/$opt"-*
    run --optimizer $opt --lr 0.01 --steps $steps --save "$dir/$opt-straight"
    run --optimizer $opt --lr 0.01 --steps $half --save "$dir/$opt-half"
    run --resume "$dir/$opt-half" --steps $steps --save "$dir/$opt-resumed"
    for part in "" .rite; do
        if ! cmp "$dir/$opt-straight$part" "$dir/$opt-resumed$part"; then
            echo "FAIL: $opt: $steps steps straight and $half + resume + $half differ ($opt-straight$part)"
            exit 1
        fi
    done
    if cmp -s "$dir/$opt-straight.rite" "$dir/$opt-half.rite"; then
        echo "FAIL: $opt: the checkpoint after $half steps equals the one after $steps"
        exit 1
    fi
    echo "ok: $opt: $steps steps straight == $half + save + resume + $half, bit for bit"
done
