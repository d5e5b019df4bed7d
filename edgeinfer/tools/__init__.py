"""Tools around a loaded model: bench, check (the doctor), the camera/file stream, fleet reports and
batch runs on a Ray cluster, with their report schemas and plots. Each sits on :mod:`edgeinfer.model`
and the task table; none is imported by ``import edgeinfer`` except the doctor's entry point."""
