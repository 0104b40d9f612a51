#!/usr/bin/env bash
# The checks that need a GPU, in one script for a lent GPU machine (aimed at well under 10 minutes on one H200):
#   1. the training step on CUDA: fp32, bf16 and fp16 autocast, channels_last (bench/train_step.py's CUDA rows),
#      and extraction, frontends and scoring on CUDA (their CUDA rows);
#   2. does the GPU wait for data: issue 15's VoxCeleb-shaped run (ResNet34, batch 128, 2 s crops, MUSAN- and
#      RIR-shaped folders), augmentation in the loader workers against on the device (bench/device_augment.py);
#   3. a short quickstart-shaped training run on CUDA with `precision: auto` (the log names the choice and its
#      data_wait_fraction), `vvframe verify` on CUDA, and the run exported (TorchScript, and ONNX where onnx is
#      installed) and loaded back on CUDA, its embeddings compared with the run's.
# Each step's output goes to OUT_DIR (default: $OUT, else gpu_checks/), one file a step; a failing step is
# reported and the next one runs. The exit status is the number of failed steps.
#
# Here:          PYTHON=.venv/bin/python bash bench/gpu_checks.sh [OUT_DIR]   (DEVICE=cpu: the run and export
#                steps alone, on the CPU: a smoke test of this script)
# The device tool: its python3 holds torch and torchaudio but not soundfile, and nothing can be fetched there;
#   carry a folder .whl (ignored by git) holding the cp312 wheels of soundfile, cffi and pycparser, fetched here
#   with  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
#   --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl
#   soundfile cffi pycparser ; then run  bash bench/gpu_checks.sh  with carry [".whl"].
set -u -o pipefail
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
OUT_DIR=${1:-${OUT:-gpu_checks}}
WORK=$(mktemp -d)
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
failed=0

step() {  # step NAME COMMAND...: run it, its output in OUT_DIR/NAME.txt and on the terminal
    local name=$1
    shift
    echo "== $name: $*"
    if ! "$@" 2>&1 | tee "$OUT_DIR/$name.txt"; then
        echo "== $name FAILED" | tee -a "$OUT_DIR/$name.txt"
        failed=$((failed + 1))
    fi
}

# set-up where vvframe is not installed yet: the carried wheels, then vvframe itself without its dependencies
if ! "$PYTHON" -c "import soundfile" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" .whl/*.whl || exit 99
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PYTHON" -c "import vvframe_plugins, vvframe" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 98
fi
VVFRAME=("$PYTHON" -m vvframe)
if [ "$DEVICE" != cpu ]; then  # DEVICE=cpu: a smoke test of the rest of this script on a machine without a GPU
    step machine sh -c "nvidia-smi; $PYTHON -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))'"
    step bench "$PYTHON" bench/run_all.py --markdown --only train_step --only frontends --only extraction --only scoring
    step device_augment "$PYTHON" bench/device_augment.py --device "$DEVICE" --markdown
fi

# the quickstart's corpus where `make quickstart` puts it (generated when missing), the run in a folder of its own
CORPUS=data/quickstart
RUN=$WORK/run
[ -f "$CORPUS/val_trials.txt" ] || step synth "${VVFRAME[@]}" data synth "$CORPUS" --speakers 100 --utterances 12 \
    --eval-speakers 40 --cohort-speakers 40 --val-speakers 10 --seconds 2-4 --seed 0
step train "${VVFRAME[@]}" run recipes/quickstart.yaml --run-dir "$RUN" "trainer.device=$DEVICE" trainer.epochs=3
grep -E "precision|memory format|waiting for data|EER" "$RUN/log.txt" >"$OUT_DIR/train_log.txt" 2>/dev/null
first=$(awk 'NR == 1 {print $2}' "$CORPUS/trials.txt")
second=$(awk 'NR == 1 {print $3}' "$CORPUS/trials.txt")
step verify "${VVFRAME[@]}" verify "$RUN" "$CORPUS/audio/$first" "$CORPUS/audio/$second" --device "$DEVICE"
step export_torchscript "${VVFRAME[@]}" export "$RUN" --format torchscript --out "$WORK/model.pt"
if "$PYTHON" -c "import onnx, onnxscript, onnxruntime" 2>/dev/null; then
    step export_onnx "${VVFRAME[@]}" export "$RUN" --format onnx --out "$WORK/model.onnx"
fi
step exported "$PYTHON" - "$RUN" "$WORK" "$CORPUS/audio/$first" "$DEVICE" <<'EOF'
import sys
from pathlib import Path

import vvframe

run, work, wav, device = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
reference = vvframe.load(run, device=device).embed(wav)
for path in [work / "model.pt", work / "model.onnx"]:
    if path.exists():
        model = vvframe.load(path, device=device)
        got = model.embed(wav).to(reference.device)
        print(f"{path.name}: on {model.device}, max |diff| against the run on {device}: {float((got - reference).abs().max()):.2e}")
EOF
echo "== $failed step(s) failed; outputs in $OUT_DIR"
rm -rf "$WORK"
exit "$failed"
