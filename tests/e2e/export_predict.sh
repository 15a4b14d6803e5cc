#!/usr/bin/env bash
# The trained model at the end, checked by PyTorch itself (python3-torch):
#   - cutlayer-train --export: the whole model; its logits on 100 test images equal
#     cutlayer's within 1e-5 (vanilla and U-shaped layouts);
#   - a split run (vanilla and U-shaped): the client exports its front (+ head), the server its
#     back at shutdown, each equal to cutlayer's within 1e-5; `cutlayer-client predict` sends
#     100 test images (IDX, and the same as CSV) through the deployed split model; the parts
#     joined by cutlayer-export give, in PyTorch, the same class and probabilities within 1e-5;
#   - predict refuses inputs of the wrong shape and a client without checkpoints, by name.
source "$(dirname "$0")/lib.sh"
py=/usr/bin/python3
check="$py $(dirname "$0")/export_check.py"
steps=${EXPORT_STEPS:-60}

# 100 test images as an IDX file, and as a CSV (784 pixel columns and a label column, which
# predict leaves out).
$py - "$work" <<'PY'
import gzip, struct, sys
w, n = sys.argv[1], 100
raw = gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").read()[16:16 + n * 784]
labels = gzip.open("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").read()[8:8 + n]
open(f"{w}/inputs.idx", "wb").write(struct.pack(">IIII", 0x803, n, 28, 28) + raw)
with open(f"{w}/inputs.csv", "w") as f:
    f.write("label," + ",".join(f"px{i}" for i in range(784)) + "\n")
    for k in range(n):
        f.write(str(labels[k]) + "," + ",".join(str(b) for b in raw[k * 784:(k + 1) * 784]) + "\n")
    f.write("\n")
with open(f"{w}/narrow.csv", "w") as f:
    f.write("a,b,c\n1,2,3\n")
PY

for layout in vanilla u-shaped; do
  flag=()
  [ "$layout" = u-shaped ] && flag=(--u-shaped)
  "$bin/cutlayer-train" -c "$configs/client.json" --steps "$steps" "${flag[@]}" --export "$work/train-$layout.pt" \
    >"$work/train-$layout.json" 2>"$work/train-$layout.log" || { cat "$work/train-$layout.log"; exit 1; }
  $check part "$work/train-$layout.pt"

  start_server "$layout" "${flag[@]}" --export "$work/back-$layout.pt"
  spawn alice "-$layout" "${flag[@]}" --steps "$steps" --checkpoint-dir "$work/ckpt-$layout" \
    --export "$work/client-$layout.pt"
  await "-$layout" alice
  for input in idx csv; do
    client --client-key "$work/keys/alice.key" --name alice "${flag[@]}" --checkpoint-dir "$work/ckpt-$layout" \
      predict --input "$work/inputs.$input" --out "$work/pred-$layout-$input.csv" >"$work/pred-$layout-$input.json" \
      2>"$work/pred-$layout-$input.log" || { cat "$work/pred-$layout-$input.log"; exit 1; }
  done
  cmp "$work/pred-$layout-idx.csv" "$work/pred-$layout-csv.csv" || { echo "$layout: IDX and CSV inputs differ"; exit 1; }
  # Bad input is refused by name, before anything is sent.
  if client --client-key "$work/keys/alice.key" --name alice "${flag[@]}" --checkpoint-dir "$work/ckpt-$layout" \
    predict --input "$work/narrow.csv" --out "$work/bad.csv" >/dev/null 2>"$work/bad.log"; then
    echo "$layout: inputs of the wrong shape were taken"
    exit 1
  fi
  grep -q "narrow.csv': inputs of \[3\] per example; the model takes \[1x28x28\]" "$work/bad.log" ||
    { echo "$layout: unclear refusal:"; cat "$work/bad.log"; exit 1; }
  if client --client-key "$work/keys/alice.key" --name alice "${flag[@]}" --checkpoint-dir "$work/none-$layout" \
    predict --input "$work/inputs.idx" --out "$work/bad.csv" >/dev/null 2>"$work/bad.log"; then
    echo "$layout: predictions without a trained front"
    exit 1
  fi
  grep -q "train this client first" "$work/bad.log" || { echo "$layout: unclear refusal:"; cat "$work/bad.log"; exit 1; }
  [ ! -e "$work/bad.csv" ] || { echo "$layout: a refused prediction wrote a file"; exit 1; }
  stop_server
  grep -q '"predict_batches":2,' "$work/$layout.out" || [ "$layout" = u-shaped ] ||
    { echo "$layout: the server did not answer 2 prediction batches"; cat "$work/$layout.out"; exit 1; }
  grep -q '"labels_received":0,' "$work/$layout.out" || [ "$layout" = vanilla ] ||
    { echo "$layout: labels reached the server"; exit 1; }

  "$bin/cutlayer-export" --client "$work/client-$layout.pt" --back "$work/back-$layout.pt" \
    --out "$work/model-$layout.pt" >/dev/null
  $check part "$work/client-$layout.pt" "$work/back-$layout.pt"
  $check model "$work/model-$layout.pt" "$work/inputs.idx" "$work/pred-$layout-idx.csv"
done
