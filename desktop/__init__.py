"""Herdbook's desktop app (PySide6). Widgets display Qt models over the engine; work runs in worker threads."""
