import pytest

from mnistcl.experiments import ExperimentNotFound, ExperimentStore

pytestmark = pytest.mark.unit


def test_create_update_list_sort(tmp_path):
    s = ExperimentStore(tmp_path / "e.db")
    a = s.create("sw1", "convnet", {"learning_rate": 0.001}, dataset="v1", profile="quick")
    b = s.create("sw1", "torchnet", {"learning_rate": 0.004}, dataset="v1", profile="quick")
    c = s.create("sw2", "vgg", {"width": 8}, dataset="v2", profile="quick")
    s.update(a, status="completed", val_accuracy=0.91, history=[{"epoch": 1, "loss": 0.5}])
    s.update(b, status="completed", val_accuracy=0.95)
    s.update(c, status="pruned", val_accuracy=0.40)
    assert [e.id for e in s.list(sort="val_accuracy", descending=True)] == [b, a, c]
    assert [e.id for e in s.list(sweep="sw1")] == [a, b]
    assert s.get(a).history == [{"epoch": 1, "loss": 0.5}]
    assert s.get(a).params == {"learning_rate": 0.001}
    assert s.sweeps() == ["sw1", "sw2"]
    with pytest.raises(ExperimentNotFound):
        s.get(99)
    with pytest.raises(ValueError, match="cannot sort"):
        s.list(sort="bogus; DROP TABLE experiments")
    with pytest.raises(ValueError, match="unknown experiment fields"):
        s.update(a, nonsense=1)
