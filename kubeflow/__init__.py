"""scarfx: kubeflow."""
