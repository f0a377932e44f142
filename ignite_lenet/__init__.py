"""ignite_lenet: LeNet-5 on MNIST with pytorch-ignite, exported to TorchScript / ONNX / torch.export,
served with ONNX Runtime, benchmarked on CPU and GPU."""

__version__ = "0.1.0"
