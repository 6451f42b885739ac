#!/usr/bin/env bash
# Build build/{{name}}.wasm from app.py with componentize-py. On first use it creates a
# virtualenv under $SHOAL_TOOLCHAINS (default ~/.cache/shoal/toolchains) and installs
# componentize-py into it. Needs python3 (3.10 or later, with venv). Run from anywhere.
set -euo pipefail
COMPONENTIZE_PY_VERSION=0.25.1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SHOAL_TOOLCHAINS:-$HOME/.cache/shoal/toolchains}/python"
tool="$venv/bin/componentize-py"
if [[ "$("$tool" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
    echo "installing componentize-py $COMPONENTIZE_PY_VERSION into $venv"
    [[ -x "$venv/bin/pip" ]] || "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# componentize-py's linker cannot take a world-level export named like a libc function
# (`shutdown`): build against a copy of the world whose export is `shoal-shutdown`, with
# an entry point that forwards it, then rename the export back (rename_export.py).
stage="$here/build/stage"
rm -rf "$stage"
mkdir -p "$stage/wit" "$stage/py"
cp -R "$here/wit/." "$stage/wit/"
sed 's/^\([[:space:]]*\)export shutdown:/\1export shoal-shutdown:/' \
    "$here/wit/processor.wit" > "$stage/wit/processor.wit"
cp "$here/app.py" "$stage/py/"
cat > "$stage/py/app_component.py" <<'PY'
import app


class WitWorld(app.WitWorld):
    def shoal_shutdown(self, shard, reason):
        return self.shutdown(shard, reason)
PY
out="$here/build/{{name}}.wasm"
env -u VIRTUAL_ENV "$tool" --quiet -d "$stage/wit" -w processor \
    componentize app_component -p "$stage/py" -o "$out.tmp"
"$venv/bin/python" "$here/rename_export.py" "$out.tmp" shoal-shutdown shutdown
mv "$out.tmp" "$out"
rm -rf "$stage"
echo "built $out ($(wc -c <"$out" | tr -d ' ') bytes)"
