#!/usr/bin/env bash
# The package as a user gets it: build the wheel, install it into a fresh virtualenv outside the checkout, and from
# an empty folder that holds its own train.py and data/__init__.py (names our stages once ran as `python -m train.cli`
# and would have picked up) run every console script's --help, `orpo-pipeline --print-config` and
# `orpo-train --config configs/orpo_smollm2_cpu.yaml --print-config` (the configs ship inside the package).
#
# The fresh venv takes its third-party packages from $VENV (one .pth line: the same versions, the lock's), not from
# a second multi-GB download; orpo_deploy itself comes only from the wheel (.pth files in $VENV, such as the
# editable install's, are not read through a plain path line). Exit 0 when every command worked.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say() { echo "[check_wheel] $*"; }

"$VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$tmp/dist" . \
    > "$tmp/build.log" 2>&1 || { say "error: building the wheel failed:"; tail -20 "$tmp/build.log"; exit 1; }
wheel=$(ls "$tmp"/dist/orpo_deploy-*.whl)
say "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"
for must in orpo_deploy/configs/orpo_smollm2_cpu.yaml orpo_deploy/configs/pipeline_smollm2_cpu.yaml \
    orpo_deploy/data/splits/train_conversational.jsonl orpo_deploy/serve/migrations/env.py; do
    "$VENV/bin/python" -c "import sys, zipfile; sys.exit('$must' not in zipfile.ZipFile('$wheel').namelist())" \
        || { say "error: the wheel lacks $must"; exit 1; }
done
if "$VENV/bin/python" -c "import sys, zipfile; sys.exit(not any(n.startswith('tests/') for n in zipfile.ZipFile('$wheel').namelist()))"; then
    say "error: the wheel ships tests/"; exit 1
fi

"$VENV/bin/python" -m venv --without-pip "$tmp/venv"
site=$("$tmp/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
deps=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$(cd "$deps" && pwd)" > "$site/_orpo_deploy_deps.pth"
"$VENV/bin/python" -m pip --disable-pip-version-check --python "$tmp/venv/bin/python" install -q --no-deps --no-index "$wheel"

mkdir -p "$tmp/user/data"
echo 'raise SystemExit("the user'"'"'s train.py ran instead of orpo_deploy.train")' > "$tmp/user/train.py"
echo 'raise SystemExit("the user'"'"'s data package was imported instead of orpo_deploy.data")' > "$tmp/user/data/__init__.py"
cd "$tmp/user"
where=$("$tmp/venv/bin/python" -c "import orpo_deploy; print(orpo_deploy.__file__)")
case $where in "$site"/*) ;; *) say "error: orpo_deploy imported from $where, not the wheel"; exit 1 ;; esac
for script in orpo-train orpo-sweep orpo-data orpo-eval orpo-export orpo-serve orpo-loadtest orpo-compare orpo-pipeline; do
    "$tmp/venv/bin/$script" --help > "$tmp/help.txt" 2>&1 || { say "error: $script --help failed:"; tail -5 "$tmp/help.txt"; exit 1; }
done
"$tmp/venv/bin/orpo-pipeline" --print-config > "$tmp/pipeline.yaml" 2>"$tmp/err.txt" \
    || { say "error: orpo-pipeline --print-config failed:"; tail -5 "$tmp/err.txt"; exit 1; }
"$tmp/venv/bin/orpo-train" --config configs/orpo_smollm2_cpu.yaml --print-config > "$tmp/train.yaml" 2>"$tmp/err.txt" \
    || { say "error: orpo-train --config configs/orpo_smollm2_cpu.yaml --print-config failed:"; tail -5 "$tmp/err.txt"; exit 1; }
say "ok: 9 console scripts, orpo-pipeline --print-config and the packaged train config, from $(basename "$wheel") in a fresh venv"
