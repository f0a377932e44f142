"""Inference latency and throughput: eager, TorchScript, torch.export, torch.compile, a CUDA graph, ONNX Runtime.

    pytest benchmarks/ --benchmark-only --benchmark-json benchmarks/results/<machine>.json
    python -m ignite_lenet.bench_report benchmarks/results/*.json

Every case runs real MNIST test images already on the device, after a warm-up, under
``torch.inference_mode()``; CUDA cases synchronize inside the timed call. Batch 1 is measured with one CPU
thread and with all cores; larger batches with all cores. Models come from the product's own export code
(the ``exported`` fixture trains a small model on real MNIST and exports it).

Layout per device, as measured: ``channels_last`` on CPU (faster there), NCHW on CUDA (channels_last measured
slower on an H200: 5.34M against 7.36M images/s at batch 8192). The CUDA cases run with
``torch.backends.cudnn.benchmark = True`` (restored afterwards). ``cuda-graph`` is the eager model captured in
one ``torch.cuda.CUDAGraph`` per batch size; its timed call copies the batch into the graph's static input,
replays and synchronizes.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from bench_utils import DEVICES, cuda_graph_runner, cudnn_benchmark, record

from ignite_lenet.checkpoints import load_best_model, load_exported_program, load_torchscript
from ignite_lenet.export.exporter import export
from ignite_lenet.export.formats import FORMATS
from ignite_lenet.mnist.idx import read_mnist
from ignite_lenet.mnist.resize import to_model_input
from ignite_lenet.model import optimize_layout

ALL_CORES = torch.get_num_threads()
TORCH_ENGINES = ("eager", "torchscript", "torch-export", "torch-compile")
CUDA_ONLY_ENGINES = ("cuda-graph",)
ORT_ENGINES = ("onnxruntime", "onnxruntime-int8")


def _cases():
    for device in DEVICES:
        name = getattr(device, "values", [device])[0]
        marks = getattr(device, "marks", ())
        batches = (1, 64, 1024, 8192) if name == "cuda" else (1, 64, 1024)
        for batch in batches:
            threads = (1, ALL_CORES) if batch == 1 and name == "cpu" and ALL_CORES > 1 else (ALL_CORES,)
            for t in threads:
                engines = TORCH_ENGINES + (CUDA_ONLY_ENGINES if name == "cuda" else ()) + ORT_ENGINES
                for engine in engines:
                    yield pytest.param(engine, name, batch, t, marks=marks, id=f"{engine}-{name}-b{batch}-t{t}")


@pytest.fixture(scope="session")
def bench_models(trained_checkpoint, mnist_dir, tmp_path_factory):
    """fp32 exports in every format plus the int8 ONNX model, from the product's export code."""
    out = tmp_path_factory.mktemp("bench_exports")
    report = export(trained_checkpoint, out, tuple(FORMATS), quantize="int8", data_dir=mnist_dir, download=False,
                    log=lambda line: None)
    return report.files


@pytest.fixture(scope="session")
def bench_images(mnist_dir) -> np.ndarray:
    images, _ = read_mnist(mnist_dir, "test", download=False)
    return to_model_input(images)  # 10,000 images: every batch size fits


def _torch_runner(engine: str, files, checkpoint, device: torch.device, benchmark, x: torch.Tensor):
    if engine == "cuda-graph":  # the eager model, captured once for this batch size
        model = optimize_layout(load_best_model(checkpoint, map_location=device)[0], device)
        run = cuda_graph_runner(model, x)
        with torch.inference_mode():  # the replay computes what the eager model computes
            torch.testing.assert_close(run(x).clone(), model(x))
        return run
    if engine == "eager":
        model, _ = load_best_model(checkpoint, map_location=device)
        module = optimize_layout(model, device)
    elif engine == "torchscript":
        module = load_torchscript(files["torchscript"], map_location=device)
    elif engine == "torch-export":
        module = load_exported_program(files["torch-export"], device)
    else:  # torch-compile
        if benchmark.disabled:
            pytest.skip("torch.compile takes ~30 s to compile on 2 cores; measured with --benchmark-only")
        model, _ = load_best_model(checkpoint, map_location=device)
        module = torch.compile(optimize_layout(model, device))

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = module(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def _ort_runner(engine: str, files, device: str, threads: int):
    import onnxruntime as ort

    if engine == "onnxruntime-int8" and device == "cuda":
        pytest.skip("int8 QDQ models target the CPU execution provider")
    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[device]
    if provider not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime build has no {provider} (install onnxruntime-gpu)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    path = files["int8" if engine.endswith("int8") else "onnx"]
    session = ort.InferenceSession(str(path), options, providers=[provider])
    name = session.get_inputs()[0].name
    if device == "cpu":
        return lambda x: session.run(None, {name: x})[0]
    binding = session.io_binding()

    def run(x: ort.OrtValue) -> None:  # input already on the GPU; output stays there
        binding.bind_ortvalue_input(name, x)
        binding.bind_output(session.get_outputs()[0].name, "cuda")
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run


@pytest.mark.parametrize("engine, device, batch_size, threads", list(_cases()))
def test_inference(benchmark, engine, device, batch_size, threads, bench_models, bench_images, trained_checkpoint):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    cuda_torch = device == "cuda" and engine not in ORT_ENGINES
    try:
        # cuDNN autotuning for the CUDA engines: on before the warm-up (it tunes on the first call of a shape)
        with cudnn_benchmark(True) if cuda_torch else contextlib.nullcontext():
            x_np = np.ascontiguousarray(bench_images[:batch_size])
            if engine in ORT_ENGINES:
                run = _ort_runner(engine, bench_models, device, threads)
                if device == "cuda":
                    import onnxruntime as ort

                    x = ort.OrtValue.ortvalue_from_numpy(x_np, "cuda", 0)
                else:
                    x = x_np
            else:
                dev = torch.device(device)
                x = torch.from_numpy(x_np).to(dev)
                run = _torch_runner(engine, bench_models, trained_checkpoint, dev, benchmark, x)
            for _ in range(3):  # warm-up: allocations, compilation, kernel selection
                out = run(x)
            if out is not None:  # outputs are checked once, outside the timed calls (ORT on CUDA keeps them there)
                values = out.float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
                assert values.shape == (batch_size, 10) and np.isfinite(values).all()
            benchmark.group = f"inference {device} batch {batch_size} threads {threads}"
            benchmark(run, x)
        extra = {"cudnn_benchmark": True} if cuda_torch else {}
        if engine in ("eager", "torch-compile", "cuda-graph"):
            extra["layout"] = "channels_last" if device == "cpu" else "NCHW"
        record(benchmark, images=batch_size, engine=engine, device=device, batch_size=batch_size, threads=threads,
               kind="inference", **extra)
    finally:
        torch.set_num_threads(previous)


def test_cudnn_benchmark_flag_is_restored():
    """The CUDA cases turn cuDNN's autotuner on; the process-wide flag is the caller's again afterwards."""
    before = torch.backends.cudnn.benchmark
    with cudnn_benchmark(not before):
        assert torch.backends.cudnn.benchmark is (not before)
    assert torch.backends.cudnn.benchmark is before
    with pytest.raises(RuntimeError), cudnn_benchmark(not before):
        raise RuntimeError("a failing case")
    assert torch.backends.cudnn.benchmark is before
