#!/bin/sh
# char_lm_export_check.sh CHAR_LM [DIR] - checks char_lm's --export and
# --init-adapter (lora_rite_io.h): a --quick run of both optimizers exports
# their adapters (DIR/export/rite/ and DIR/export/adamw/: peft/ and
# adapter.gguf); then a LoRA-RITE run starts from the GGUF file and an AdamW
# run from the PEFT directory, and each must print, as the held-out loss of
# its initial adapters, the exporting run's final held-out loss (F32: the
# same floats, so the same loss; compared as printed, 6 decimals). A run of
# one optimizer exports to DIR/peft/ and DIR/adapter.gguf, and a --rank that
# is not the file's is refused.
# Exit status: 0 ok, 1 a check failed or an error, 77 a word list is missing.
set -u
prog=${1:?usage: char_lm_export_check.sh CHAR_LM [DIR]}
dir=${2:-char_lm_export_check}
mkdir -p "$dir" || exit 1
rm -rf "$dir/export" "$dir/again"

fail() {
    echo "FAIL: $*"
    exit 1
}

# run LOG FLAGS...: char_lm --quick with FLAGS, output to LOG
run() {
    log=$1
    shift
    "$prog" --quick --base "$dir/base.bin" --out "$dir/out" "$@" >"$log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        cat "$log"
        exit $rc   # 77 (a word list is missing) is passed on
    fi
}

# loss LOG PREFIX: the held-out loss printed on the first line of LOG starting with PREFIX
loss() {
    sed -n "s/^$2.*held-out loss \([0-9.]*\) nats.*/\1/p" "$1" | head -n 1
}

# exported D: D/peft/ and D/adapter.gguf were written
exported() {
    for f in peft/adapter_model.safetensors peft/adapter_config.json adapter.gguf; do
        [ -s "$1/$f" ] || fail "$1/$f was not written"
    done
    for m in fc1 fc2 head; do
        grep -q "\"$m\"" "$1/peft/adapter_config.json" || fail "$1/peft/adapter_config.json does not name $m"
    done
}

run "$dir/export.log" --export "$dir/export"
exported "$dir/export/rite"
exported "$dir/export/adamw"
want_rite=$(loss "$dir/export.log" "exported LoRA-RITE")
want_adamw=$(loss "$dir/export.log" "exported AdamW")
[ -n "$want_rite" ] && [ -n "$want_adamw" ] || { cat "$dir/export.log"; fail "no exported held-out loss printed"; }

run "$dir/gguf.log" --optimizer rite --init-adapter "$dir/export/rite/adapter.gguf" --export "$dir/again"
got=$(loss "$dir/gguf.log" "initial adapters:")
[ "$got" = "$want_rite" ] || fail "LoRA-RITE: exported with held-out loss $want_rite, read back from GGUF: ${got:-none}"
echo "ok: LoRA-RITE adapters exported and read back from GGUF: held-out loss $got both"
exported "$dir/again"
again=$(loss "$dir/gguf.log" "exported LoRA-RITE")
[ -n "$again" ] && awk "BEGIN { exit !($again < $got) }" ||
    fail "fine-tuning on from the GGUF adapters did not lower the held-out loss ($got -> ${again:-none})"
echo "ok: fine-tuning on from them: $got -> $again; one optimizer exports to DIR/peft and DIR/adapter.gguf"

run "$dir/peft.log" --optimizer adamw --init-adapter "$dir/export/adamw/peft"
got=$(loss "$dir/peft.log" "initial adapters:")
[ "$got" = "$want_adamw" ] || fail "AdamW: exported with held-out loss $want_adamw, read back from PEFT: ${got:-none}"
echo "ok: AdamW adapters exported and read back from the PEFT directory: held-out loss $got both"

"$prog" --quick --base "$dir/base.bin" --out "$dir/out" --optimizer rite --rank 4 \
    --init-adapter "$dir/export/rite/peft" >"$dir/rank.log" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q "shape" "$dir/rank.log" ||
    { cat "$dir/rank.log"; fail "a rank-8 adapter read with --rank 4: exit status $rc, want 1 and a shape error"; }
echo "ok: a rank-8 adapter read with --rank 4 is refused"
