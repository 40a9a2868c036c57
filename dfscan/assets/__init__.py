"""Files shipped inside the package: MTCNN ONNX models, a tiny probe model, the example clip."""
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
MTCNN_DIR = ASSETS_DIR / "mtcnn"
IDENTITY_ONNX = ASSETS_DIR / "identity.onnx"
EXAMPLE_CLIP = ASSETS_DIR / "example.mp4"
