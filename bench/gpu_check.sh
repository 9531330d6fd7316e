#!/usr/bin/env bash
# bench/gpu_check.sh: dasv's GPU path end to end, as ONE prepared run for a machine lent with a GPU
# (issue 20). Each step is bounded in time, prints one line `STEP name: ok|FAIL ...figures`, and a
# failed step does not stop the next; a summary ends the run.
#
#   setup      python, torch (the machine's own: nothing is downloaded), the GPU, dasv installed
#              editable without the network (pip --no-index --no-deps --no-build-isolation; the
#              steps run `python -m dasv_cli` from this checkout either way); wheels carried in
#              ./.whl are installed first (see /work/.library/device/README.md on carrying them)
#   train      `dasv train --gpus 1` (--smoke: --device cpu), the paper's network, 20 updates on a
#              synthetic store with validation every 10, then --resume for 10 more: exit 0, and
#              last.pt / best.pt load on the CPU with torch.load(weights_only=True)
#   train_gpu  bench/train_gpu.py: end-to-end samples/s from shards (fp32; bf16 + channels_last;
#              + torch.compile) beside the model-only figure, against 3,500 samples/s
#   model      bench/model.py: embeddings/s (infer-*) and training samples/s (fp32, the original
#              code's way, the paper's network only) of the paper's network, ResNet34 and ECAPA C=512 (published sizes)
#   embed      `dasv embed` of the train step's store (3,000 utterances) with its checkpoint:
#              utterances/s, start-up left out (timed by a 16-utterance run)
#   smi        nvidia-smi utilisation and memory sampled every 0.5 s during train_gpu: median, peak
#              (--smoke: the CPU's load and memory through the same summary)
#
#   bash bench/gpu_check.sh                 # on the GPU machine: ~5-6 min, 450 s budget in all
#   bash bench/gpu_check.sh --smoke         # here: the same steps on the CPU, tiny configs, ~1-2 min
#   bash bench/gpu_check.sh --only train,embed --budget 200   # a rerun of the steps that failed
#
# Options: --smoke; --setup / --no-setup (install dasv; default: on the device yes, --smoke no, so
# a shared virtual environment is never touched); --budget SECONDS (all steps together; a step gets
# at most what is left); --limit STEP=SECONDS (one step's cap); --only a,b,c; --out DIR (logs and
# summary; default $OUT when set, else a new temporary folder); --work DIR (stores, runs; default a
# temporary folder removed at the end). PYTHON picks the interpreter (default python3).
# Under --out (8 files at most, what the device tool brings back): setup.log train.log
# train_gpu.log model.log embed.log smi.csv summary.txt summary.json.
# Exit status: 0 when every step run was ok, 1 when one failed, 2 on a usage error.

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STEPS="setup train train_gpu model embed smi"
SMOKE=0 SETUP=auto BUDGET="" ONLY="" OUTDIR=${OUT:-} WORK=""
declare -A CAP=([setup]=90 [train]=150 [train_gpu]=270 [model]=140 [embed]=70 [smi]=20)

usage() { sed -n '2,/^# Exit status/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --setup) SETUP=1 ;;
        --no-setup) SETUP=0 ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
        --limit) v=${2:?--limit needs STEP=SECONDS}; CAP[${v%%=*}]=${v#*=}; shift ;;
        --only) ONLY=${2:?--only needs step names}; shift ;;
        --out) OUTDIR=${2:?--out needs a folder}; shift ;;
        --work) WORK=${2:?--work needs a folder}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for s in ${ONLY//,/ }; do
    case " $STEPS " in *" $s "*) ;; *) echo "gpu_check.sh: --only: no step '$s' (steps: $STEPS)" >&2; exit 2 ;; esac
done
for s in "${!CAP[@]}"; do
    case " $STEPS " in *" $s "*) ;; *) echo "gpu_check.sh: --limit: no step '$s' (steps: $STEPS)" >&2; exit 2 ;; esac
    [[ ${CAP[$s]} =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: --limit $s=${CAP[$s]}: seconds expected" >&2; exit 2; }
done
ONLY=${ONLY:-${STEPS// /,}}

export PY=${PYTHON:-python3} HELPER="$REPO/bench/gpu_check.py" REPO SMOKE
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ "$SMOKE" = 1 ]; then
    BUDGET=${BUDGET:-300}; [ "$SETUP" = auto ] && SETUP=0
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny models: more threads only contend on a small machine
    export DEVICE=cpu TRAIN_DEVICE="--device cpu" WORKERS=1 NET="--kernel-size 16 --heads 4 --embedding-size 16 --window-seconds 1 --batch-size 8"
    export STORE_ARGS="--utterances 60 --frames 150 --speakers 6 --trials 60" TG_ARGS="--smoke"
    export MODEL_ARGS="--configs small --modes fp32,infer-fp32,infer-bf16-cl --batch 2 --frames 100 --runs 1 --steps 1 --warmup 1 --no-graph-breaks"
else
    BUDGET=${BUDGET:-480}; [ "$SETUP" = auto ] && SETUP=1
    export DEVICE=cuda TRAIN_DEVICE="--gpus 1" WORKERS=6 NET=""
    export STORE_ARGS="--utterances 3000 --frames 500 --speakers 200 --trials 400" TG_ARGS="--utterances 4000 --steps 80 --warmup 20"
    export MODEL_ARGS="--configs paper,resnet34,ecapa512 --modes fp32,original-fp32,infer-fp32,infer-bf16-cl --runs 3"
fi
export SETUP
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: --budget $BUDGET: seconds expected" >&2; exit 2; }

OWN_WORK=0
if [ -z "$WORK" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/dasv-gpu-check.XXXXXX") && OWN_WORK=1; fi
[ -n "$OUTDIR" ] || OUTDIR=$(mktemp -d "${TMPDIR:-/tmp}/dasv-gpu-check-out.XXXXXX")
mkdir -p "$WORK" "$OUTDIR" || exit 1
WORK=$(cd "$WORK" && pwd) OUTDIR=$(cd "$OUTDIR" && pwd)
export WORK OUTDIR
cleanup() { [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null; [ "$OWN_WORK" = 1 ] && rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -d "$REPO/.whl" ] && compgen -G "$REPO/.whl/*.whl" >/dev/null; then
    export PYTHONPATH="$WORK/site:$PYTHONPATH"  # filled by the setup step
fi

START=$(date +%s)
RESERVE=5  # seconds kept for the summary
: >"$OUTDIR/summary.txt"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# -- the steps: each writes its figures as two lines to $WORK/NAME.result (JSON, then the human line)

step_setup() {
    set -e
    if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
        echo "installing the carried wheels: $(ls "$REPO"/.whl)"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$REPO"/.whl/*.whl
    fi
    installed="run from $REPO (PYTHONPATH)"
    if [ "$SETUP" = 1 ]; then
        if (cd "$REPO" && "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .); then
            installed="installed editable from $REPO"
        else
            installed="NOT installed (pip install -e . failed offline, see setup.log); run from $REPO (PYTHONPATH)"
        fi
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    "$PY" "$HELPER" setup --device "$DEVICE" --installed "$installed" >"$WORK/setup.result"
}

step_train() {
    set -e
    local d="$WORK/train" t0 t1 t2
    rm -rf "$d"
    # shellcheck disable=SC2086
    "$PY" "$HELPER" store "$d" $STORE_ARGS
    t0=$(now)
    # shellcheck disable=SC2086
    "$PY" -m dasv_cli train $TRAIN_DEVICE $NET --train-labels "$d/labels.txt" --features "$d/feats" \
        --valid-trials "$d/trials.txt" -o "$d/run" --max-steps 20 --validate-every 10 --print-every 5 \
        --save-every 10 --workers "$WORKERS"
    t1=$(elapsed "$t0")
    "$PY" "$HELPER" check-train "$d/run" --steps 20 >/dev/null
    t0=$(now)
    # shellcheck disable=SC2086
    "$PY" -m dasv_cli train $TRAIN_DEVICE -o "$d/run" --resume --max-steps 30
    t2=$(elapsed "$t0")
    "$PY" "$HELPER" check-train "$d/run" --steps 30 --seconds "$t1" "$t2" >"$WORK/train.result"
}

step_train_gpu() {
    set -e
    # shellcheck disable=SC2086
    "$PY" "$REPO/bench/train_gpu.py" $TG_ARGS --work "$WORK/train_gpu" --json-out "$WORK/train_gpu.json"
    "$PY" "$HELPER" train-gpu-line "$WORK/train_gpu.json" >"$WORK/train_gpu.result"
}

step_model() {
    set -e
    # shellcheck disable=SC2086
    "$PY" "$REPO/bench/model.py" --device "$DEVICE" $MODEL_ARGS --json >"$WORK/model.json"
    "$PY" "$HELPER" model-line "$WORK/model.json" >"$WORK/model.result"
}

step_embed() {
    set -e
    local d="$WORK/train" model="$WORK/train/run/last.pt" t1 t2 t0
    if [ ! -f "$d/keys-small.txt" ]; then
        # shellcheck disable=SC2086
        "$PY" "$HELPER" store "$d" $STORE_ARGS
    fi
    if [ ! -f "$model" ]; then
        echo "the train step left no checkpoint: embedding with an untrained one"
        model="$WORK/untrained.pt"
        "$PY" "$HELPER" checkpoint "$model" $([ "$SMOKE" = 1 ] && echo --tiny)
    fi
    rm -f "$WORK"/emb-small.h5 "$WORK"/emb.h5
    t0=$(now)
    "$PY" -m dasv_cli embed --model "$model" --features "$d/feats" --keys "$d/keys-small.txt" \
        -o "$WORK/emb-small.h5" --device "$DEVICE" -q
    t1=$(elapsed "$t0")
    t0=$(now)
    "$PY" -m dasv_cli embed --model "$model" --features "$d/feats" -o "$WORK/emb.h5" --device "$DEVICE" -q
    t2=$(elapsed "$t0")
    "$PY" "$HELPER" check-embed "$WORK/emb.h5" "$d/feats" --small "$(wc -l <"$d/keys-small.txt")" \
        --seconds "$t1" "$t2" >"$WORK/embed.result"
}

step_smi() {
    set -e
    [ -s "$OUTDIR/smi.csv" ] || { echo "no samples: the train_gpu step did not run"; exit 1; }
    "$PY" "$HELPER" smi-summary "$OUTDIR/smi.csv" \
        --source "$([ "$SMOKE" = 1 ] && echo 'CPU stand-in for nvidia-smi' || echo nvidia-smi)" >"$WORK/smi.result"
}
export -f step_setup step_train step_train_gpu step_model step_embed step_smi now elapsed

record() {  # NAME STATUS TEXT: the step's one line, on stdout and in summary.txt
    echo "STEP $1: $2 $3" | tee -a "$OUTDIR/summary.txt"
}

last_words() {  # the last non-empty line of a log, shortened
    grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-300
}

run_step() {  # NAME: run it under its time limit and record its line
    local name=$1 left limit rc t0 log
    case ",$ONLY," in *",$name,"*) ;; *) return 0 ;; esac
    left=$((BUDGET - ($(date +%s) - START) - RESERVE))
    if [ "$left" -lt 5 ]; then
        record "$name" FAIL "not run: ${left}s of the ${BUDGET}s budget left"
        OK=0
        return
    fi
    limit=$((CAP[$name] < left ? CAP[$name] : left))
    log="$OUTDIR/$name.log"
    [ "$name" = smi ] && log="$WORK/smi.log"
    rm -f "$WORK/$name.result"
    t0=$(now)
    echo "== $name: up to ${limit}s ($(date -u +%H:%M:%S))" >>"$log"
    timeout -k 10 "$limit" bash -c "step_$name" >>"$log" 2>&1
    rc=$?
    local took words; took=$(elapsed "$t0") words=$(last_words "$log")
    echo "== $name: exit $rc after ${took}s" >>"$log"
    if [ "$rc" -eq 0 ] && [ -s "$WORK/$name.result" ]; then
        head -n 1 "$WORK/$name.result" >"$WORK/$name.figures.json"
        record "$name" ok "$(sed -n 2p "$WORK/$name.result") [${took}s]"
        return
    fi
    local why partial=""
    case $rc in
        124|137) why="timed out after ${limit}s" ;;
        *) why="exit $rc: $words" ;;
    esac
    if [ "$name" = train_gpu ] && [ -s "$WORK/train_gpu.json" ] &&
        "$PY" "$HELPER" train-gpu-line "$WORK/train_gpu.json" >"$WORK/train_gpu.partial" 2>/dev/null; then
        head -n 1 "$WORK/train_gpu.partial" >"$WORK/train_gpu.figures.json"
        partial="; finished before that: $(sed -n 2p "$WORK/train_gpu.partial")"
    fi
    record "$name" FAIL "$why$partial [${took}s]"
    OK=0
}

OK=1
echo "gpu_check: $([ "$SMOKE" = 1 ] && echo "smoke (CPU, tiny configs)" || echo device) run of $ONLY; budget ${BUDGET}s; logs in $OUTDIR" >&2
run_step setup
run_step train
if case ",$ONLY," in *,train_gpu,*) true ;; *) false ;; esac; then
    if [ "$SMOKE" = 1 ]; then
        "$PY" "$HELPER" sampler >"$OUTDIR/smi.csv" 2>>"$OUTDIR/train_gpu.log" &
    else
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
            >"$OUTDIR/smi.csv" 2>>"$OUTDIR/train_gpu.log" &
    fi
    SAMPLER=$!
fi
run_step train_gpu
if [ -n "${SAMPLER:-}" ]; then kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; SAMPLER=""; fi
run_step model
run_step embed
run_step smi

TOTAL=$(($(date +%s) - START))
"$PY" "$HELPER" summary "$OUTDIR" "$WORK" --mode "$([ "$SMOKE" = 1 ] && echo smoke || echo device)" \
    --elapsed "$TOTAL" 2>>"$OUTDIR/setup.log" || echo "gpu_check: summary.json could not be written" >&2
n_ok=$(grep -c '^STEP [a-z_]*: ok' "$OUTDIR/summary.txt")
n_all=$(grep -c '^STEP ' "$OUTDIR/summary.txt")
echo "SUMMARY: $n_ok of $n_all steps ok in ${TOTAL}s ($([ "$SMOKE" = 1 ] && echo smoke || echo device)); logs and summary.json in $OUTDIR" |
    tee -a "$OUTDIR/summary.txt"
[ "$OK" = 1 ]
