"""Running the Triton kernels on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1), as CI does.

Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when our kernel modules are first imported, so the
variable must be set before that. Triton 3.6's interpreter also turns a loaded scalar used as a loop bound into a
Python int with `int(array)`, which numpy ≥ 2.4 refuses for 1-element arrays (triton-lang/triton#9171); our kernels
loop over a segment's blocks with exactly such a bound, so `enable()` applies the upstream fix (squeeze first).
"""

from __future__ import annotations

from triton.runtime import interpreter
from triton.runtime.interpreter import InterpretedFunction

from . import triton_fwd


def interpreted() -> bool:
    """True when the kernels were built for the interpreter (TRITON_INTERPRET=1 before triton's first import)."""
    return isinstance(triton_fwd._output_kernel, InterpretedFunction)


def _index(self: object) -> int:
    return int(self.handle.data.squeeze())  # type: ignore[attr-defined]


def enable() -> None:
    """Make interpreted tensors usable as loop bounds under numpy ≥ 2.4 (idempotent)."""
    if getattr(interpreter._patch_lang_tensor, "_mmx_index_fix", False):
        return
    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor: type, scope: interpreter._LangPatchScope) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", _index)

    patch_lang_tensor._mmx_index_fix = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patch_lang_tensor


if interpreted():
    enable()
