"""Running a model on a shiftnpu device: load once, infer many times.

``NPURunner(device).load("model.npu")`` checks the model against the device's reported config,
compiles it (quant/npu_compile.py), uploads weights, channel parameters, the layer program and
(for an LSTM) the PWL tables' feature-memory area, and verifies them by reading them back; ``infer_batch(x)`` uploads inputs, starts the program, waits
for it and returns exactly the integers the golden model returns, with the device's cycle count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quant.compile import CompileError
from quant.memmap import NPU_REGIONS
from quant.model import NPUModel
from quant.npu_compile import CompiledModel, compile_model
from quant.retarget import NETWORK_FIELDS

from .device import ConfigMismatch, Device, LinkError, NoAnswer

__all__ = ["NPURunner", "InferenceResult", "ModelLoadError"]

STATUS_RUNNING, STATUS_DONE, STATUS_ERROR = 1, 2, 4
#: Config fields a model may differ from the device in (the device's clock and serial line).
LINK_FIELDS = ("clk_hz", "baud")


def _retarget_hint(model_config, device_config) -> str:
    """How to move the model to the device's config, when only the array or memories differ."""
    if any(getattr(model_config, f) != getattr(device_config, f) for f in NETWORK_FIELDS):
        return ""
    return (
        " (only the array/memory layout differs: `shiftnpu retarget MODEL --config <the build's report.json> "
        "-o NEW.npu` moves the model to the device's config)"
    )


class ModelLoadError(LinkError):
    """The model could not be put on the device (it does not fit, or the read-back differs)."""


@dataclass
class InferenceResult:
    """Outputs of one batch: the last GEMM's int8 logits, the argmax classes, device cycles."""

    logits: np.ndarray
    classes: np.ndarray | None
    cycles: int
    seconds: float


def _int8_inputs(x) -> np.ndarray:
    """``x`` as int8 values, refusing (not wrapping) non-integers and values outside -128..127."""
    a = np.asarray(x)
    if a.dtype.kind not in "iuf":
        raise ValueError(f"inputs must be int8 numbers, got an array of {a.dtype}")
    if a.size and a.dtype.kind == "f" and not np.all(a == np.round(a)):
        raise ValueError("inputs must be integers (int8); use raw=True for raw input values")
    if a.size and (a.min() < -128 or a.max() > 127):
        raise ValueError(
            f"inputs must be int8 (-128..127), got {a.min():g}..{a.max():g}; use raw=True for raw input values"
        )
    return a.astype(np.int8)


def _quantize_exactly(model: NPUModel, raw) -> np.ndarray:
    """The model's input map of ``raw``, refusing values it would saturate (they are not clipped)."""
    r = np.asarray(raw)
    if r.dtype.kind not in "iuf":
        raise ValueError(f"raw inputs must be numbers, got an array of {r.dtype}")
    m = model.input.multiplier
    if r.dtype.kind == "f" and not np.all(np.isfinite(r)):
        raise ValueError("raw inputs hold NaN or infinite values")
    # Python ints: a uint8 pixel of 200 times 7 must not wrap around to 120 in the check itself
    if r.size and (int(np.max(r)) * m > 127 or int(np.min(r)) * m < -128):
        raise ValueError(
            f"raw inputs {np.min(r):g}..{np.max(r):g} times the input multiplier {m} leave int8 "
            f"(the model was trained on 0..{model.input.raw_max}); they are not clipped"
        )
    return model.input.quantize(r)


class NPURunner:
    """A model loaded on a device.

    Parameters
    ----------
    device : Device
        An open device (board or simulated).
    batch : int
        Samples per device run. Dense-only models run the whole batch as one GEMM; models with
        convolutions run one image after another inside one program.
    """

    def __init__(self, device: Device, batch: int = 1):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.device = device
        self.batch = batch
        self.model: NPUModel | None = None
        self.compiled: CompiledModel | None = None
        #: the last load() found the model already in the device's memories (a preloaded bitstream)
        self.preloaded = False

    def load(self, model: NPUModel | str | Path, *, verify: bool = True) -> CompiledModel:
        """Check, compile, upload and (with ``verify``) read back a model."""
        if not isinstance(model, NPUModel):
            model = NPUModel.load(model)
        info = self.device.info()
        # The clock and the baud rate are the build's, not the model's: a board build reports its
        # PLL's clock (39.75 MHz for the iCEBreaker's 40), and nothing the model computes, nor where
        # it sits in the memories, depends on either.
        link = {k: getattr(model.config, k) for k in LINK_FIELDS}
        try:
            model.config.check_matches(info.config.replace(**link), what="device", against="model")
        except ValueError as e:
            raise ConfigMismatch(str(e) + _retarget_hint(model.config, info.config)) from None
        names = [r.name for r in info.regions]
        if names[: len(NPU_REGIONS)] != list(NPU_REGIONS):
            raise ConfigMismatch(f"the device's memory map {names} is not an NPU's {list(NPU_REGIONS)}")
        try:
            compiled = compile_model(model, self.batch, info.config, prog_depth=info.config.prog_depth)
        except CompileError as e:
            raise ModelLoadError(f"the model does not fit this device at batch {self.batch}: {e}") from None
        images = [("program", 0, compiled.program), ("channel", 0, compiled.channel), ("weight", 0, compiled.weight)]
        images += [("feature", base, words) for base, words in compiled.feature_init]
        # A bitstream built with the model (`shiftnpu build --model`) boots with these images in
        # its memories: then nothing is uploaded (the program is read first: it is short and
        # differs between models).
        self.preloaded = self._holds(images)
        if self.preloaded:
            self.model, self.compiled = model, compiled
            return compiled
        for region, base, words in images:
            self.device.write_mem(region, base, words)
        if verify:
            for region, base, words in images:
                back = self.device.read_mem(region, base, len(words))
                bad = [i for i, (a, b) in enumerate(zip(back, words, strict=True)) if int(a) != int(b)]
                if bad:
                    raise ModelLoadError(
                        f"{region} memory read back differs at {len(bad)} words (first {base + bad[0]})"
                    )
        self.model, self.compiled = model, compiled
        return compiled

    def _holds(self, images: list[tuple[str, int, list[int]]]) -> bool:
        """Whether the device's memories already hold these images (stops at the first difference)."""
        for region, base, words in images:
            if words and [int(w) for w in self.device.read_mem(region, base, len(words))] != [int(w) for w in words]:
                return False
        return True

    def infer_batch(self, x, *, raw: bool = False, timeout: float = 60.0) -> InferenceResult:
        """Run one batch. ``x``: int8 ``[batch, *input_shape]``, or raw inputs with ``raw=True``."""
        if self.compiled is None:
            raise RuntimeError("no model loaded: call load() first")
        xq = _quantize_exactly(self.model, x) if raw else _int8_inputs(x)
        if xq.shape[1:] != tuple(self.model.input.shape):
            raise ValueError(f"input shape {xq.shape[1:]} does not match the model's {tuple(self.model.input.shape)}")
        t0 = time.monotonic()
        for base, words in self.compiled.input_images(xq):
            self.device.write_mem("feature", base, words)
        self.device.start()
        status = self._wait_done(timeout)
        if status & STATUS_ERROR:
            raise LinkError(f"the device's sequencer stopped with an error (status 0x{status:08x})")
        reads = [self.device.read_mem("feature", b, n) for b, n in self.compiled.read_plan()]
        logits, classes = self.compiled.decode_outputs(reads)
        return InferenceResult(logits, classes, status >> 3, time.monotonic() - t0)

    def _wait_done(self, timeout: float) -> int:
        """Poll the status until done, backing off from 0.5 ms to 20 ms between polls: short runs
        return at once, and a long one (an LSTM batch) is not slowed down by a stream of status
        requests (on the simulated device every request makes the simulator step clock by clock)."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            status, _ = self.device.status()
            if status & STATUS_DONE:
                return status
            if time.monotonic() > deadline:
                raise NoAnswer(f"the device is still not done after {timeout} s (status 0x{status:08x})")
            time.sleep(delay)
            delay = min(2 * delay, 0.02)

    def infer(self, x, *, raw: bool = False, progress: bool = False) -> InferenceResult:
        """Any number of samples, in batches (the last one padded with zeros and trimmed)."""
        if self.model is None:
            raise RuntimeError("no model loaded: call load() first")
        x = _quantize_exactly(self.model, x) if raw else _int8_inputs(x)
        if len(x) == 0:
            raise ValueError("no inputs to run")
        n = len(x)
        logits, classes, cycles, secs = [], [], 0, 0.0
        starts = range(0, n, self.batch)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="inference", unit="batch")
        for s in starts:
            chunk = x[s : s + self.batch]
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), dtype=chunk.dtype)])
            r = self.infer_batch(chunk)
            logits.append(r.logits[: self.batch - pad])
            if r.classes is not None:
                classes.append(r.classes[: self.batch - pad])
            cycles += r.cycles
            secs += r.seconds
        return InferenceResult(np.concatenate(logits), np.concatenate(classes) if classes else None, cycles, secs)
