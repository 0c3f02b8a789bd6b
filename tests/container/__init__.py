"""The container tier: the CPU image built from the checkout and run (tests/container/run.sh)."""
