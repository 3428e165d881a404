# Make `import mmx` and the `mmx` command work from this checkout on a GPU machine whose python3 already has torch
# (and triton, transformers) but where mmx is not installed and nothing can be downloaded. From the repository root:
#
#   source benchmarks/gpu_env.sh
#   mmx info && python -m benchmarks.kernels.sweep --help
#
# Wheels of the other dependencies (typer, rich, jinja2, flash-linear-attention, ...) placed in .whl/ beforehand
# (`pip download -d .whl ...` on a machine with network) are unpacked into /tmp/site. The packages are laid out under
# /tmp/mmxsrc as the installed wheel has them: mmx_cli/ is copied to `mmx/` (source this again after editing it) and
# model/, kernels/, tasks/, results/ are linked in as `mmx/model`, .... PYTHONPATH and PATH change for this shell only.
# A copy of the checkout travels without its .git: `git rev-parse HEAD > .commit` beforehand, and runs record that commit.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
mkdir -p /tmp/mmxsrc/bin && rm -rf /tmp/mmxsrc/mmx && cp -r mmx_cli /tmp/mmxsrc/mmx
for pkg in model kernels tasks results; do ln -sfn "$PWD/$pkg" "/tmp/mmxsrc/mmx/$pkg"; done
export PYTHONPATH="/tmp/mmxsrc:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
printf '#!/bin/sh\nexec python3 -m mmx "$@"\n' > /tmp/mmxsrc/bin/mmx && chmod +x /tmp/mmxsrc/bin/mmx
export PATH="/tmp/mmxsrc/bin:$PATH"
if [ -f .commit ]; then export MMX_GIT_COMMIT="$(cat .commit)"; fi
