import os

# OpenMP worker threads sleep between parallel regions instead of spinning. libgomp reads this once, when torch
# loads it, so it is set here, before any module imports torch; an OMP_WAIT_POLICY of the user's own wins. With
# other processes on the same cores (the HTTP side, clients, other services), spinning workers made 16-row decode
# steps 6-9x slower on 2 cores; sleeping costs about 10% at one row on a quiet machine (bench/README.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
