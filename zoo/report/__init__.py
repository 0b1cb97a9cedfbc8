"""One run's pictures (plots) and what a finished run leaves in its sink (run_report)."""
