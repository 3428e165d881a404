# Source on the GPU machine (its python3 has torch/triton/transformers but not mmx): installs carried wheels from
# .whl/ (typer, rich, pydantic, fla, ...) and makes `import mmx` and the `mmx` command work from this checkout.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
mkdir -p /tmp/mmxsrc/bin && rm -rf /tmp/mmxsrc/mmx && cp -r mmx_cli /tmp/mmxsrc/mmx
for pkg in model kernels tasks results; do ln -sfn "$PWD/$pkg" "/tmp/mmxsrc/mmx/$pkg"; done
export PYTHONPATH="/tmp/mmxsrc:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
printf '#!/bin/sh\nexec python3 -m mmx "$@"\n' > /tmp/mmxsrc/bin/mmx && chmod +x /tmp/mmxsrc/bin/mmx
export PATH="/tmp/mmxsrc/bin:$PATH"
