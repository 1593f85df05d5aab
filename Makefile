# `make bench`: every benchmark at the small sizes recorded in BENCHMARKS.md (≈ 17 min on 2 cores
# when the machine is quiet). `make bench-quick`: the same scripts at tiny sizes, 1 repetition
# (≈ 5 min; a smoke run, not for recording). Each measurement first waits (up to BENCH_WAIT_S s,
# default 1200) for the 1-minute load average to fall below BENCH_MAX_LOAD (0 = don't wait).
PY ?= .venv/bin/python
BENCH_MAX_LOAD ?= 1.5
export RAY_AUTH_MODE := disabled

.PHONY: bench bench-quick bench-psd bench-sweep bench-overheads bench-scaling bench-precision

bench: bench-psd bench-overheads bench-precision bench-sweep bench-scaling

bench-psd:
	$(PY) bench/psd.py --repeats 5

bench-overheads:
	$(PY) bench/overheads.py --repeats 3 --max-load $(BENCH_MAX_LOAD)

bench-precision:
	$(PY) bench/precision.py --repeats 3 --max-load $(BENCH_MAX_LOAD)

bench-sweep:
	$(PY) bench/sweep_vs_naive.py --repeats 1 --max-load $(BENCH_MAX_LOAD)

bench-scaling:
	$(PY) bench/scaling.py --rows base deg4 folds2 sources2 size64 --max-load $(BENCH_MAX_LOAD)

bench-quick:
	$(PY) bench/psd.py --repeats 1
	$(PY) bench/overheads.py --repeats 1 --models resnet10t --max-load $(BENCH_MAX_LOAD)
	$(PY) bench/precision.py --repeats 1 --models resnet10t --folds 0 --finetune-epochs 1 --source-n 200 --max-load $(BENCH_MAX_LOAD)
	$(PY) bench/sweep_vs_naive.py --degradations 0 --folds 0 1 --source-n 200 --pretrain-epochs 1 --finetune-epochs 1 --max-load $(BENCH_MAX_LOAD)
	$(PY) bench/scaling.py --rows base sources2 --max-load $(BENCH_MAX_LOAD)
