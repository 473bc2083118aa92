"""Building and loading the engine's small C kernels (``cpu_kernel``, ``cpu_ops``).

A kernel's C source (after ``C_PRELUDE``: the headers, the vector width ``W`` and ``exp_neg``) is
compiled once per machine (``cc -O3 -march=native``, 512-bit vectors preferred on x86-64) into
``$SEESAW_CACHE_DIR`` (default ``~/.cache/seesaw``) under a name keyed by the source, the flags
and the host, written atomically so that ranks starting together do not race, and loaded with
ctypes. Without a compiler, or with ``SEESAW_CPU_KERNEL=0``, ``load`` returns None and the
callers keep to their portable torch paths. fp32 only; single-threaded (the engine runs one
torch thread per CPU rank).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

__all__ = ["C_PRELUDE", "FLAGS", "Kernels", "fp32_cpu", "load"]

log = logging.getLogger(__name__)

C_PRELUDE = r"""#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define W 16  /* floats per vector chunk: one AVX-512 register, two AVX2 ones */

/* exp(x) for x <= 0: 2^k * e^y, y = x - k ln2 in [-ln2/2, ln2/2], Taylor to y^6 (rel. error
   ~1e-7); plain arithmetic so that the compiler vectorizes the softmax loops. */
static inline float exp_neg(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float k = rintf(x * 1.44269504f), y = x - k * 0.693147181f;
  const float p = 1.0f + y * (1.0f + y * (0.5f + y * (0.166666667f + y * (0.0416666667f +
                  y * (0.00833333333f + y * 0.00138888889f)))));
  int32_t bits = ((int32_t)k + 127) << 23;
  float two_k;
  memcpy(&two_k, &bits, sizeof two_k);
  return p * two_k;
}

"""

FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-shared", "-fPIC"]
if platform.machine().lower() in ("x86_64", "amd64"):
    # 512-bit vectors where the CPU has them (GCC prefers 256 on Intel's AVX-512 parts): one
    # layer's causal attention of 8 x 512 tokens (SmolLM2-135M heads, thread CPU, best of 10),
    # alternating builds: 42.1/43.6/44.2 -> 36.9/37.8/38.7 ms; decode of 64 x 438 tokens over
    # 30 layers' K/V (1.3 GB, from memory) unchanged: 152.8/169.0 vs 155.0/159.6 ms
    FLAGS.insert(2, "-mprefer-vector-width=512")


def fp32_cpu(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether tensors of ``dtype`` on ``device`` are what the C kernels take (fp32, CPU)."""
    return device.type == "cpu" and dtype == torch.float32


def _cache_dir() -> Path:
    return Path(os.environ.get("SEESAW_CACHE_DIR") or Path.home() / ".cache" / "seesaw")


def load(name: str, source: str, what: str) -> ctypes.CDLL | None:
    """The library ``name`` built from ``C_PRELUDE + source`` (see the module docstring), or None
    (logged once, naming ``what`` falls back to torch) when it cannot be had."""
    if os.environ.get("SEESAW_CPU_KERNEL", "1") == "0":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.warning("no C compiler found: %s uses the portable torch path", what)
        return None
    text = C_PRELUDE + source
    key = hashlib.sha256((text + " ".join(FLAGS) + platform.node() + platform.machine()).encode()).hexdigest()
    so = _cache_dir() / f"{name}_{key[:16]}.so"
    try:
        if not so.exists():
            so.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=so.parent) as tmp:
                src = Path(tmp) / f"{name}.c"
                src.write_text(text)
                out = Path(tmp) / so.name
                subprocess.run([cc, *FLAGS, str(src), "-o", str(out), "-lm"], check=True,
                               capture_output=True, timeout=120)
                os.replace(out, so)  # atomic: ranks building at once each install a whole file
        return ctypes.CDLL(str(so))
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("CPU kernel %s unavailable (%s): %s uses the portable torch path", name, e, what)
        return None


class Kernels:
    """A C library of kernels, built (``load``) on the first ``available()`` and typed from
    ``signatures`` (function name -> (restype, argtypes)); ``lib`` is the loaded library once
    ``available()`` said True."""

    def __init__(self, name: str, source: str, what: str, signatures: dict[str, tuple]):
        self.name, self.source, self.what, self.signatures = name, source, what, signatures
        self.lib: ctypes.CDLL | None = None
        self._tried = False

    def available(self) -> bool:
        """Whether the compiled kernels can be used (built on the first call)."""
        if not self._tried:
            self._tried = True
            lib = load(self.name, self.source, self.what)
            if lib is not None:
                for fn, (restype, argtypes) in self.signatures.items():
                    getattr(lib, fn).restype, getattr(lib, fn).argtypes = restype, argtypes
            self.lib = lib
        return self.lib is not None

    def applies(self, dtype: torch.dtype, device: torch.device) -> bool:
        """Whether tensors of ``dtype`` on ``device`` go through these kernels (fp32 on the CPU, built)."""
        return fp32_cpu(dtype, device) and self.available()
