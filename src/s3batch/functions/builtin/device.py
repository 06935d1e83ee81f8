"""Where the model built-ins run: `S3BATCH_DEVICE`, batch sizes, threads per worker.

`S3BATCH_DEVICE` (read by each function worker when it loads its model):

- `auto` (the default, also when unset or empty): the first GPU when the model's runtime sees
  one (PyTorch: `torch.cuda.is_available()`; ONNX Runtime: its CUDA execution provider is
  installed), else the CPU;
- `cpu`: always the CPU;
- `cuda` or `cuda:N`: GPU 0 or GPU N. Asking for a GPU the runtime cannot see is a
  ConfigError, never a silent fall-back to the CPU.

Anything else is a ConfigError that names the variable and the accepted forms. The parsing is
pure (`parse_device`, `resolve`); only `torch_device` and `onnx_device` import a runtime.

Each LambdaInvoke function runs in `S3BATCH_FUNCTION_WORKERS` processes (default: one per
CPU). On the CPU, the workers split the cores between them (`threads_per_worker`) so that N
workers do not each start a thread per core and thrash.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Final, Literal

from s3batch.errors import ConfigError

#: Environment variable choosing the device of the model built-ins.
DEVICE_ENV: Final = "S3BATCH_DEVICE"
#: Environment variable with the number of worker processes per function (see settings.py).
FUNCTION_WORKERS_ENV: Final = "S3BATCH_FUNCTION_WORKERS"
AUTO: Final = "auto"
CPU: Final = "cpu"
CUDA: Final = "cuda"
#: Items per forward pass on a GPU: large enough to keep it busy, small enough for any card
#: (256 images of 224x224 are ~150 MB of input; 256 texts of 256 tokens are far less).
GPU_BATCH_SIZE: Final = 256
#: The fewest threads a worker gets, however many workers share the cores.
MIN_THREADS_PER_WORKER: Final = 1

_FORMS = "auto, cpu, cuda or cuda:N (N a GPU index)"
_CUDA_INDEX = re.compile(r"cuda:(\d{1,3})")

Kind = Literal["cpu", "cuda"]


@dataclass(frozen=True, slots=True)
class DeviceChoice:
    """What `S3BATCH_DEVICE` asks for: `auto`, `cpu`, or `cuda` with a GPU index."""

    kind: Literal["auto", "cpu", "cuda"]
    index: int = 0


@dataclass(frozen=True, slots=True)
class Device:
    """The device a model runs on, once the choice is resolved against the runtime."""

    kind: Kind
    index: int = 0

    @property
    def name(self) -> str:
        """PyTorch's name for it: "cpu" or "cuda:N"."""
        return CPU if self.kind == CPU else f"{CUDA}:{self.index}"

    @property
    def is_gpu(self) -> bool:
        return self.kind == CUDA

    def batch_size(self, cpu: int) -> int:
        """Items per forward pass on this device: `cpu`, the model's own CPU size, on the CPU.
        Each model has its own there: a CPU runs small batches faster, down to where the
        per-pass cost shows, and where that is depends on the model (its module says)."""
        return GPU_BATCH_SIZE if self.is_gpu else cpu


def parse_device(raw: str | None) -> DeviceChoice:
    """The choice a `S3BATCH_DEVICE` value states. Raises ConfigError for any other value."""
    value = (raw or AUTO).strip().lower()
    if value == AUTO:
        return DeviceChoice(AUTO)
    if value == CPU:
        return DeviceChoice(CPU)
    if value == CUDA:
        return DeviceChoice(CUDA, 0)
    match = _CUDA_INDEX.fullmatch(value)
    if match is None:
        raise ConfigError(f"{DEVICE_ENV}={raw!r} is not a device: expected {_FORMS}")
    return DeviceChoice(CUDA, int(match[1]))


def device_choice() -> DeviceChoice:
    """The choice of this process's environment."""
    return parse_device(os.environ.get(DEVICE_ENV))


def resolve(choice: DeviceChoice, *, gpus: int | None, runtime: str) -> Device:
    """The device for `choice` given how many GPUs `runtime` sees.

    `gpus` is None when the runtime cannot count them (ONNX Runtime only says whether its
    CUDA provider is installed): an explicit index is then left for the runtime to check.
    """
    if choice.kind == CPU:
        return Device(CPU)
    visible = gpus if gpus is not None else 1
    if choice.kind == AUTO:
        return Device(CUDA, 0) if visible > 0 else Device(CPU)
    if visible == 0:
        raise ConfigError(
            f"{DEVICE_ENV}={choice_name(choice)} but {runtime} sees no CUDA GPU; "
            f"set {DEVICE_ENV}=cpu or auto, or install a CUDA build of {runtime}"
        )
    if gpus is not None and choice.index >= gpus:
        raise ConfigError(
            f"{DEVICE_ENV}={choice_name(choice)} but {runtime} sees {gpus} GPU(s) (indices 0-{gpus - 1})"
        )
    return Device(CUDA, choice.index)


def choice_name(choice: DeviceChoice) -> str:
    """The choice as it would be written in `S3BATCH_DEVICE`."""
    return f"{CUDA}:{choice.index}" if choice.kind == CUDA else choice.kind


def torch_device() -> Device:
    """The device for a PyTorch model under this process's `S3BATCH_DEVICE`."""
    choice = device_choice()  # a bad value fails before torch is even imported
    torch = require("torch")
    gpus = torch.cuda.device_count() if choice.kind != CPU and torch.cuda.is_available() else 0
    return resolve(choice, gpus=gpus, runtime="PyTorch")


#: ONNX Runtime's name for its CUDA execution provider.
ONNX_CUDA_PROVIDER: Final = "CUDAExecutionProvider"


def onnx_device() -> Device:
    """The device for an ONNX Runtime model under this process's `S3BATCH_DEVICE`."""
    choice = device_choice()
    cuda = ONNX_CUDA_PROVIDER in require("onnxruntime").get_available_providers()
    return resolve(choice, gpus=None if cuda else 0, runtime="ONNX Runtime")


def threads_per_worker(cpus: int | None = None, workers: int | None = None) -> int:
    """CPU threads one worker's model may use: the cores split evenly between the workers."""
    cpus = cpus if cpus is not None else available_cpus()
    workers = workers if workers is not None else function_workers(cpus)
    return max(MIN_THREADS_PER_WORKER, cpus // max(1, workers))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def function_workers(cpus: int) -> int:
    """Worker processes per function, as settings.py reads them (default: one per CPU)."""
    raw = os.environ.get(FUNCTION_WORKERS_ENV, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else cpus


def configure_torch_threads() -> int:
    """Give PyTorch this worker's share of the cores; returns the thread count set."""
    threads = threads_per_worker()
    require("torch").set_num_threads(threads)
    return threads


#: How to install what the model built-ins import (pyproject's `ml` extra).
ML_EXTRA_INSTALL: Final = "pip install 's3batch[ml]'"


def require(module: str) -> ModuleType:
    """`module`, imported; a ConfigError saying how to install it when it is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the model built-ins need the optional ml dependencies ({exc.name} is not "
            f"installed): {ML_EXTRA_INSTALL}"
        ) from exc
