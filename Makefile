# `make bench`: every benchmark at small sizes (a few minutes each on 2 cores, after waiting for
# the machine's 1-minute load to drop below BENCH_MAX_LOAD; BENCH_WAIT_S caps each wait).
PY ?= .venv/bin/python
BENCH_MAX_LOAD ?= 1.5
export RAY_AUTH_MODE := disabled

.PHONY: bench bench-psd bench-sweep bench-overheads bench-scaling bench-precision

bench: bench-psd bench-overheads bench-precision bench-sweep bench-scaling

bench-psd:
	$(PY) bench/psd.py --repeats 3

bench-overheads:
	$(PY) bench/overheads.py --repeats 3 --max-load $(BENCH_MAX_LOAD)

bench-precision:
	$(PY) bench/precision.py --repeats 3 --max-load $(BENCH_MAX_LOAD)

bench-sweep:
	$(PY) bench/sweep_vs_naive.py --repeats 1 --max-load $(BENCH_MAX_LOAD)

bench-scaling:
	$(PY) bench/scaling.py --rows base deg4 folds2 sources2 size64 --max-load $(BENCH_MAX_LOAD)
