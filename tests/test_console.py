"""The sweep's progress reporter: swept keys and AUC columns, only the changed rows while it
runs, the whole table at the end, the trial's one name."""

import io
from trainables.console import SweepReporter


class T:
    def __init__(self, name, status, config, result=None):
        self.name, self.status, self.config, self.last_result = name, status, config, result or {}

    def __str__(self):
        return self.name


def test_reporter_prints_changes_then_the_table():
    out = io.StringIO()
    rep = SweepReporter(["source", "finetune.lr"], {"iid_auc": "I.I.D. AUC", "ood_auc": "O.O.D. AUC"}, out=out)
    rep.setup(total_samples=2)
    a = T("natural-d0", "RUNNING", {"source": "natural", "finetune": {"lr": 0.001}})
    b = T("medical-d0", "PENDING", {"source": "medical", "finetune": {"lr": 0.001}})
    assert rep.should_report([a, b])
    rep.report([a, b], False)
    assert not rep.should_report([a, b])  # nothing changed, no heartbeat due
    a.status, a.last_result = "TERMINATED", {"iid_auc": 0.91234, "ood_auc": 0.5}
    rep.report([a, b], False)
    rep.report([a, b], True)
    text = out.getvalue()
    chunks = text.split("running")
    assert "medical-d0" not in chunks[1] and "natural-d0" in chunks[1]  # a PENDING trial is not a change
    assert "trials 2/2: 1 PENDING, 1 TERMINATED" in text
    final = text.split("finished")[1]
    assert "status      source   finetune.lr  I.I.D. AUC  O.O.D. AUC" in final
    assert "natural-d0  TERMINATED  natural  0.001        0.9123      0.5" in final
    assert "medical-d0" in final and "config" not in text


def test_final_table_is_capped_errors_first(monkeypatch):
    import trainables.console as console

    monkeypatch.setattr(console, "MAX_ROWS", 3)
    out = io.StringIO()
    rep = SweepReporter(["fold"], {}, out=out)
    trials = [T(f"f{i}", "TERMINATED", {"fold": i}) for i in range(5)] + [T("f5", "ERROR", {"fold": 5})]
    rep.report(trials, True)
    text = out.getvalue()
    assert text.index("f5     ERROR") < text.index("f0     TERMINATED") and "f2" not in text
    assert "… 3 more (every trial: spectral-ray report)" in text
