# OpenMP's wait policy is libgomp's own (its workers spin briefly between parallel regions, then sleep). The
# inference thread is the only thread with an OpenMP worker pool (loads and kernel checks run in threads that end
# with them, app/engine/cpu_linear.in_passing_thread), so those spins bridge the gaps between one decode step's
# ops: against OMP_WAIT_POLICY=PASSIVE, where every parallel region wakes sleeping workers, 1.04-1.26x at 1-32
# streams on a quiet machine (bench/README.md, "Issue 17"). On cores shared with other heavy work, set
# OMP_WAIT_POLICY=PASSIVE (the container image does) or HUGLLAMA_TORCH_THREADS=1.

__version__ = "0.1.0"
