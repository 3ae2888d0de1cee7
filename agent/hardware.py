"""What this machine has and how busy it is: GPUs through NVML (nvidia-ml-py), the rest via psutil.

A machine without an NVIDIA driver is a valid CPU node: NVML errors give empty GPU lists and one
log line, never an exception. With `fake_gpus` (tests and development only) NVML is never asked:
the machine reports that many made-up GPUs, named so that nobody can take them for real ones.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("agent.hardware")

try:
    import pynvml
except ImportError:  # the package is a dependency, but a broken install must not stop a CPU node
    pynvml = None


# Peak FP32 TFLOPS of one GPU, from the vendor's data sheets, for a first `specs` estimate; the
# platform's self-test measures the real figure. Matched as a substring of NVML's name, longest first.
FP32_TFLOPS = {
    "H200": 67.0,
    "H100 NVL": 60.0,
    "H100 PCIe": 51.0,
    "H100": 67.0,
    "A100": 19.5,
    "L40S": 91.6,
    "L40": 90.5,
    "L4": 30.3,
    "A40": 37.4,
    "A10": 31.2,
    "RTX 6000 Ada": 91.1,
    "RTX A6000": 38.7,
    "RTX 4090": 82.6,
    "RTX 4080": 48.7,
    "RTX 3090": 35.6,
    "RTX 3080": 29.8,
    "V100": 15.7,
    "T4": 8.1,
}


def estimated_tflops(gpu_model: str) -> float:
    for name in sorted(FP32_TFLOPS, key=len, reverse=True):
        if name.lower() in gpu_model.lower():
            return FP32_TFLOPS[name]
    return 0.0


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    vram_mb: int


FAKE_GPU_NAME = "Fake GPU (DC_AGENT_FAKE_GPUS)"
FAKE_GPU_VRAM_MB = 16384
FAKE_GPU_TEMP = 30.0


def fake_gpu(index: int) -> Gpu:
    """Fake GPU `index`: its UUID says what it is wherever it shows up (engine, platform, logs)."""
    return Gpu(
        index=index,
        uuid=f"GPU-fake-0000-0000-0000-{index:012d}",
        name=FAKE_GPU_NAME,
        vram_mb=FAKE_GPU_VRAM_MB,
    )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _round(value: float, places: int = 1) -> float:
    return round(float(value), places)


class Hardware:
    """Hardware detection and metrics; NVML is initialised lazily and at most once."""

    def __init__(self, disk_path: Path | str = "/", *, fake_gpus: int = 0):
        self.disk_path = str(disk_path)
        self.fake_gpus = [fake_gpu(index) for index in range(fake_gpus)]
        self._lock = threading.Lock()
        self._nvml: bool | None = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------ NVML
    def _nvml_ready(self) -> bool:
        with self._lock:
            if self._nvml is None:
                if pynvml is None:
                    log.warning("nvidia-ml-py is not installed: reporting no GPUs")
                    self._nvml = False
                else:
                    try:
                        pynvml.nvmlInit()
                        self._nvml = True
                    except pynvml.NVMLError as exc:
                        log.warning(
                            "NVIDIA driver (NVML) not available (%s): reporting no GPUs", exc
                        )
                        self._nvml = False
            return self._nvml

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _handles(self) -> list[tuple[int, Any]]:
        if not self._nvml_ready():
            return []
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            self._warn_once("count", "NVML cannot count GPUs (%s): reporting no GPUs", exc)
            return []
        handles = []
        for index in range(count):
            try:
                handles.append((index, pynvml.nvmlDeviceGetHandleByIndex(index)))
            except pynvml.NVMLError as exc:
                self._warn_once(f"gpu{index}", "GPU %d is not usable (%s)", index, exc)
        return handles

    def gpus(self) -> list[Gpu]:
        if self.fake_gpus:
            return list(self.fake_gpus)
        found = []
        for index, handle in self._handles():
            try:
                found.append(
                    Gpu(
                        index=index,
                        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                        name=_text(pynvml.nvmlDeviceGetName(handle)),
                        vram_mb=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20),
                    )
                )
            except pynvml.NVMLError as exc:
                self._warn_once(f"gpu{index}", "GPU %d is not usable (%s)", index, exc)
        return found

    def _driver(self) -> tuple[str | None, str | None]:
        """(driver version, CUDA version) or Nones."""
        if self.fake_gpus or not self._nvml_ready():
            return None, None
        driver = cuda = None
        with contextlib.suppress(pynvml.NVMLError):
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
        try:
            version = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
            cuda = f"{version // 1000}.{(version % 1000) // 10}"
        except (pynvml.NVMLError, AttributeError):
            pass
        return driver, cuda

    # ------------------------------------------------------------ public
    def detect_specs(self) -> dict[str, Any]:
        """The `specs` of `hello` (DetectedSpecsSchema)."""
        gpus = self.gpus()
        driver, cuda = self._driver()
        return {
            "gpu_model": gpus[0].name if gpus else "",
            "gpu_count": len(gpus),
            "gpu_vram_gb": _round(gpus[0].vram_mb / 1024) if gpus else 0.0,
            "gpus": [
                {"index": g.index, "uuid": g.uuid, "name": g.name, "vram_mb": g.vram_mb}
                for g in gpus
            ],
            "cpu_cores": psutil.cpu_count(logical=True) or 1,
            "ram_gb": _round(psutil.virtual_memory().total / 2**30),
            "disk_gb": _round(self._disk().total / 2**30),
            "cuda_version": cuda,
            "driver_version": driver,
        }

    def node_specs(self) -> dict[str, Any]:
        """This machine in the contract's `specs` shape, as `POST /nodes` takes it."""
        detected = self.detect_specs()
        specs = {
            "gpu_model": detected["gpu_model"] or "none",
            "gpu_count": detected["gpu_count"],
            "gpu_vram_gb": detected["gpu_vram_gb"],
            "tflops": estimated_tflops(detected["gpu_model"]) if detected["gpu_count"] else 0.0,
            "cpu_cores": detected["cpu_cores"],
            "ram_gb": detected["ram_gb"],
            "disk_gb": detected["disk_gb"],
        }
        if detected["cuda_version"]:
            specs["cuda_version"] = detected["cuda_version"]
        return specs

    def total_ram_bytes(self) -> int:
        return int(psutil.virtual_memory().total)

    def cpu_count(self) -> int:
        return psutil.cpu_count(logical=True) or 1

    def metrics(self) -> dict[str, Any]:
        """The `metrics` of a heartbeat (MetricsSchema)."""
        memory = psutil.virtual_memory()
        return {
            "cpu_temp": self._cpu_temp(),
            "cpu_utilization": _round(min(100.0, max(0.0, psutil.cpu_percent(interval=None)))),
            **(self._fake_gpu_metrics() if self.fake_gpus else self._gpu_metrics()),
            "ram_usage_mb": _round((memory.total - memory.available) / 2**20),
            "disk_usage_gb": _round(self._disk().used / 2**30, 2),
        }

    def _gpu_metrics(self) -> dict[str, list[float]]:
        gpu_temp: list[float] = []
        gpu_util: list[float] = []
        gpu_mem: list[float] = []
        gpu_power: list[float] = []
        for index, handle in self._handles():
            try:
                gpu_temp.append(
                    float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
                )
                gpu_util.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                gpu_mem.append(_round(pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20))
            except pynvml.NVMLError as exc:
                self._warn_once(f"metrics{index}", "GPU %d gives no metrics (%s)", index, exc)
                continue
            # Some boards do not report power; the list is then shorter.
            with contextlib.suppress(pynvml.NVMLError):
                gpu_power.append(_round(pynvml.nvmlDeviceGetPowerUsage(handle) / 1000))
        return {
            "gpu_temp": gpu_temp,
            "gpu_utilization": gpu_util,
            "gpu_memory_used_mb": gpu_mem,
            "gpu_power_w": gpu_power,
        }

    def _fake_gpu_metrics(self) -> dict[str, list[float]]:
        """Idle and cool: one figure per fake GPU, as a real board gives."""
        count = len(self.fake_gpus)
        return {
            "gpu_temp": [FAKE_GPU_TEMP] * count,
            "gpu_utilization": [0.0] * count,
            "gpu_memory_used_mb": [0.0] * count,
            "gpu_power_w": [0.0] * count,
        }

    def _disk(self) -> Any:
        try:
            return psutil.disk_usage(self.disk_path)
        except OSError:
            return psutil.disk_usage("/")

    def _cpu_temp(self) -> float | None:
        reader = getattr(psutil, "sensors_temperatures", None)
        if reader is None:
            return None
        try:
            sensors = reader()
        except (OSError, RuntimeError):
            return None
        for name in ("coretemp", "k10temp", "zenpower", "cpu_thermal", "acpitz"):
            readings = [r.current for r in sensors.get(name, []) if -50 <= r.current <= 200]
            if readings:
                return _round(max(readings))
        return None
