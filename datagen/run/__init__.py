"""The run: config, manifest, runner, executors, the whole-run funnel and status."""
