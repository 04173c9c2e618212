"""Where the tests find the repository and the shared real data (read-only)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]            # the repository: run_mnist.py, benchmarks/
SHARED = ROOT.parent / "shared" / "data"              # full MNIST and the public face sets
MNIST_DIR = SHARED / "mnist"
FACES_DIR = SHARED / "faces"
