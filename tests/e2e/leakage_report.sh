#!/usr/bin/env bash
# An end-to-end leakage run on a briefly trained model completes and writes its report:
# report.json (with dCor, the bias-corrected dCor^2, the permutation floor and the
# decoder attack's MSE/PSNR/SSIM, and the label leakage of a short U-shaped run: the
# cosine attack on the gradients the server sees reads the labels), report.md, and .npy
# files NumPy reads back; the label defence lowers the attacks' AUC, and a front trained with
# the cut normalised, noise and the decoder adversary is measured as the server sees it.
set -euo pipefail
bin=$1 configs=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/cutlayer-train" -c "$configs/client.json" --steps 20 --log-level warn --save-front "$work/front.pt" >/dev/null
"$bin/cutlayer-leakage" -c "$configs/client.json" --front "$work/front.pt" -o "$work/out" \
  --eval 200 --aux 300 --epochs 1 --label-steps 40 --label-record 10 >"$work/report.out" 2>"$work/leakage.log" || { cat "$work/leakage.log"; exit 1; }
/usr/bin/python3 - "$work/out" <<'PY'
import json, sys
import numpy as np
d = sys.argv[1]
r = json.load(open(f"{d}/report.json"))
for k in ("dcor", "dcor2_u", "perm_floor"):
    assert 0 <= r[k] <= 1 or k == "dcor2_u", (k, r[k])
assert r["perm_floor"] < r["dcor"], r            # a trained front is far from independent
dec, base = r["decoder"], r["mean_image_baseline"]
assert 0 < dec["mse"] < base["mse"], r            # the attack beats guessing the mean image
assert -1 <= dec["ssim"] <= 1 and dec["psnr"] > base["psnr"], r
x, z, y, rec = (np.load(f"{d}/{n}.npy") for n in ("x", "z", "y", "recon"))
assert x.shape == (200, 1, 28, 28) and rec.shape == x.shape and z.shape == (200, 32, 12, 12), (x.shape, z.shape)
assert y.dtype == np.int64 and y.shape == (200,)
assert abs(float(((rec - x) ** 2).mean()) - dec["mse"]) < 1e-4       # the file agrees with the report
assert "Reconstruction attack" in open(f"{d}/report.md").read()
L = r["label_leakage"]
assert L["steps"] == 40 and L["examples"] == 640, L
assert L["cosine_auc_mean"] > 0.9, L               # U-shaped gradients give the labels away
assert 0 <= L["norm_auc_mean"] <= 1 and 0 <= L["cosine_auc_min"] <= 1, L
g, gy = np.load(f"{d}/server_grads.npy"), np.load(f"{d}/server_grads_y.npy")
assert g.shape == (640, 512) and gy.shape == (640,), (g.shape, gy.shape)
assert "Label leakage in U-shaped mode" in open(f"{d}/report.md").read()
print("leakage report:", json.dumps(r))
PY
# The defences: a U-shaped run with the label defence (its own front measured: no --front),
# and a front trained with the cut normalised, noise and the decoder adversary.
/usr/bin/python3 - "$configs/client.json" "$work" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["train"]["u_shaped"] = True
c["privacy"] = {"label_defense": {"kind": "noise", "sigma": 1.0}}
json.dump(c, open(f"{sys.argv[2]}/defended.json", "w"))
c = json.load(open(sys.argv[1]))
c["privacy"] = {"cut_norm": True, "noise_std": 1.0, "adversary": {"weight": 0.5}}
json.dump(c, open(f"{sys.argv[2]}/cut-defended.json", "w"))
PY
"$bin/cutlayer-leakage" -c "$work/defended.json" -o "$work/def" --eval 200 --aux 300 --epochs 1 --label-steps 40 \
  --label-record 10 >/dev/null 2>"$work/leakage.log" || { cat "$work/leakage.log"; exit 1; }
"$bin/cutlayer-train" -c "$work/cut-defended.json" --steps 20 --log-level warn --save-front "$work/front-def.pt" >/dev/null
"$bin/cutlayer-leakage" -c "$work/cut-defended.json" --front "$work/front-def.pt" -o "$work/cut" --eval 200 --aux 300 \
  --epochs 1 >/dev/null 2>"$work/leakage.log" || { cat "$work/leakage.log"; exit 1; }
/usr/bin/python3 - "$work" <<'PY'
import json, sys
import numpy as np
w = sys.argv[1]
plain = json.load(open(f"{w}/out/report.json"))["label_leakage"]
r = json.load(open(f"{w}/def/report.json"))
L = r["label_leakage"]
assert L["defense"] == "noise" and L["sigma"] == 1.0 and 0 <= L["test_acc"] <= 1, L
assert r["front"] == "trained by --label-steps", r
for a in ("norm", "cosine", "lda", "cluster"):
    assert 0 <= L[f"{a}_auc_min"] <= L[f"{a}_auc_mean"] <= L[f"{a}_auc_max"] <= 1, (a, L)
# The defence buries each example's gradient under noise: the cosine attack falls well
# below the undefended run's.
assert L["cosine_auc_mean"] < plain["cosine_auc_mean"] - 0.15, (L, plain)
c = json.load(open(f"{w}/cut/report.json"))
assert c["cut_norm"] is True and c["noise_std"] == 1.0 and c["adversary_weight"] == 0.5, c
z = np.load(f"{w}/cut/z.npy")
print("defended:", json.dumps(L), "cut:", c["dcor2_u"], c["decoder"]["ssim"])
PY
"$bin/cutlayer-leakage" -c "$configs/client.json" -o "$work/x" 2>"$work/err" && exit 1
grep -q -- "--front: which front" "$work/err" || { cat "$work/err"; exit 1; }
"$bin/cutlayer-leakage" -c "$configs/client.json" --front /nonexistent.pt -o "$work/x" 2>"$work/err" && exit 1
grep -q "cannot load the front model '/nonexistent.pt'" "$work/err" || { cat "$work/err"; exit 1; }
echo "leakage report passed"
