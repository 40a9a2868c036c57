"""Faces: detection (MTCNN under onnxruntime), the one crop function, and tracking across frames."""
from dfscan.faces.crop import crop_face, square_box

__all__ = ["crop_face", "square_box"]
