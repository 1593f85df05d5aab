"""`max_concurrent` holds on a cluster with room for more, and a clean run prints no Ray warning.

A Ray head with 3 CPUs (one machine, its own temp dir) runs 1-CPU trials: without the limit three
would run at once. Overlap is counted from each trial's own final report (start = timestamp -
time_total_s). The second test is Ray issue #40652: errored trials restarted on resume are
queued straight into Tune's controller, past the ConcurrencyLimiter; the launcher's scheduler cap
(trainables/tuning.py) must still run them one at a time.
"""

import re

import pytest

from raynodes import LoopbackCluster, final_row, max_overlap, run_cli, run_intervals, short_tmpdir, trial_dirs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

# the main job, made tiny: natural source, no edit, one shortcut, three degradation levels
QUICK = ["sweeps/embedded-quick.yaml", "--set", "size=32", "--set", "source_n=200", "--set", "target_n=160",
         "--set", "psd_images=32", "--set", "pretrain.epochs=1", "--set", "finetune.epochs=4", "--set", "fold=0",
         "--set", "source=natural", "--set", "edit_strength=0", "--set", "degradation={grid: [0, 0.5, 1]}",
         "--set", "shortcut={cases: [{artifact_omega: 0.75, artifact_amplitude: 0.2}]}", "--set", "max_concurrent=1"]
# what a Ray or Tune warning looks like in the driver's output (its logger, Python's warnings)
WARNING = re.compile(r"\bWARN(ING)?\b|Warning:")


@pytest.fixture(scope="module")
def three_cpus():
    c = LoopbackCluster()
    try:
        c.start_head(cpus=3)
        yield c
    finally:
        left = c.stop()
        assert not left, f"Ray processes left after teardown: {left}"


@pytest.fixture
def results():
    d = short_tmpdir("sr-conc-")
    yield d
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def test_one_at_a_time_and_no_warnings(three_cpus, results, repo):
    proc = run_cli("sweep", *QUICK, "--storage", results, "--name", "one", RAY_ADDRESS=three_cpus.address)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "trials: 3 TERMINATED" in proc.stdout, out[-3000:]
    warnings = [line for line in out.splitlines() if WARNING.search(line)]
    assert not warnings, "\n".join(warnings)
    intervals = run_intervals(trial_dirs(results / "one"))
    assert len(intervals) == 3 and max_overlap(intervals) == 1, intervals
    # the progress table: the grid point as trial name (only degradation varies here), a column
    # per swept key, the latest AUCs
    assert re.search(r"trial\s+status\s+degradation\s+val AUC\s+I\.I\.D\. AUC\s+O\.O\.D\. AUC", proc.stdout), \
        proc.stdout[-3000:]
    assert re.search(r"d0\.5\s+TERMINATED\s+0\.5\s+0\.\d+\s+0\.\d+\s+0\.\d+", proc.stdout), proc.stdout[-3000:]


def test_errored_trials_restarted_within_the_limit(three_cpus, results, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    args = [*QUICK, "--storage", results, "--name", "errored"]
    # every trial fails its first attempt and, with max_failures 0, ends ERROR
    first = run_cli("sweep", *args, "--set", "max_failures=0", RAY_ADDRESS=three_cpus.address,
                    SPECTRAL_RAY_TEST_FAIL_ONCE=markers)
    assert "trials: 3 ERROR" in first.stdout, (first.stdout + first.stderr)[-3000:]
    # the same command resumes: the errored trials run again (their retry passes), one at a time
    again = run_cli("sweep", *args, "--set", "max_failures=0", RAY_ADDRESS=three_cpus.address,
                    SPECTRAL_RAY_TEST_FAIL_ONCE=markers)
    assert again.returncode == 0 and "resuming" in again.stdout, (again.stdout + again.stderr)[-3000:]
    assert "trials: 3 TERMINATED" in again.stdout, (again.stdout + again.stderr)[-3000:]
    trials = trial_dirs(results / "errored")
    # Tune gives a restarted trial a new folder (`d0_1a2b` beside the errored attempt's `d0`)
    finished = [t for t in trials if final_row(t) is not None]
    assert len(trials) == 6 and len(finished) == 3, [t.name for t in trials]
    assert sorted(t.name.split("_")[0] for t in finished) == ["d0", "d0.5", "d1"]
    intervals = run_intervals(finished)
    assert len(intervals) == 3 and max_overlap(intervals) == 1, intervals
