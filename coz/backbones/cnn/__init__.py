"""Feed-forward SR networks (Real-ESRGAN, SPAN, any spandrel model), with the ncnn CPU runtime."""
