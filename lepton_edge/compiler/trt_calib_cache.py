"""The legacy TensorRT calibration cache text, for `trtexec --int8 --calib=FILE` on TensorRT 8.x.

Format (what `IInt8EntropyCalibrator2::writeCalibrationCache` writes): a header line
`TRT-<version>-EntropyCalibration2` (version 8601 is TensorRT 8.6.1), then one line per tensor,
`<tensor name>: <scale>`, the scale a float32 in big-endian hex (8 digits). The scale is the
symmetric INT8 step, amax / 127. Tensor names are the ONNX tensor names TensorRT's parser keeps.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from pathlib import Path

from lepton_edge.errors import ModelError

DEFAULT_VERSION = 8601  # TensorRT 8.6.1 (JetPack 6.0 ships 8.6.2; JetPack 5.1 ships 8.5.2)
ALGORITHM = "EntropyCalibration2"
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


def scales_from_ranges(ranges: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Symmetric INT8 scales (amax / 127) of activation ranges {tensor: (low, high)}."""
    return {k: max(abs(lo), abs(hi), 1e-8) / 127.0 for k, (lo, hi) in ranges.items()}


def format_cache(scales: Mapping[str, float], *, version: int = DEFAULT_VERSION,
                 algorithm: str = ALGORITHM) -> str:
    """The cache text for `scales` {tensor name: float32 scale}."""
    lines = [f"TRT-{version}-{algorithm}"]
    for name, scale in scales.items():
        if ":" in name or "\n" in name:
            raise ValueError(f"tensor name {name!r} cannot be written to a calibration cache")
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def write_cache(path: Path, scales: Mapping[str, float], *,
                version: int = DEFAULT_VERSION) -> Path:
    """Write the cache text atomically (temp file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_cache(scales, version=version))
    tmp.replace(path)
    return path


def parse_cache(text: str, *,
                source: str = "calibration cache") -> tuple[int, str, dict[str, float]]:
    """Parse cache text into (version, algorithm, {tensor: scale}). Raises ModelError naming the
    line that is wrong."""
    lines = text.splitlines()
    if not lines or not (m := _HEADER.match(lines[0].strip())):
        first = lines[0][:60] if lines else ""
        raise ModelError(f"{source}: line 1 is {first!r}, expected a header like "
                         f"'TRT-{DEFAULT_VERSION}-{ALGORITHM}'")
    scales: dict[str, float] = {}
    for no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(": ")
        try:
            if not sep or len(value.strip()) != 8:
                raise ValueError("expected '<tensor>: <8 hex digits>'")
            scales[name] = struct.unpack(">f", bytes.fromhex(value.strip()))[0]
        except ValueError as err:
            raise ModelError(f"{source}: line {no} {line[:60]!r}: {err}") from err
    return int(m.group(1)), m.group(2), scales


def read_cache(path: Path) -> tuple[int, str, dict[str, float]]:
    return parse_cache(path.read_text(), source=str(path))
