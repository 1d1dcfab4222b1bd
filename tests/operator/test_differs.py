"""`differs`: the decision that makes an unchanged resync write nothing."""

from __future__ import annotations

from adbm_operator.reconcile import differs

DESIRED = {
    "metadata": {"name": "shop-api", "labels": {"a": "1"}},
    "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:1"}]}}},
}


def test_fields_the_server_or_others_added_are_not_a_difference() -> None:
    live = {
        "metadata": {"name": "shop-api", "labels": {"a": "1", "b": "2"}, "uid": "u"},
        "spec": {
            "replicas": 3,
            "template": {"spec": {"containers": [{"name": "app", "image": "x:1", "tty": False}]}},
        },
        "status": {"availableReplicas": 3},
    }
    assert not differs(DESIRED, live)


def test_a_changed_or_missing_field_of_ours_is() -> None:
    changed = {
        "metadata": {"name": "shop-api", "labels": {"a": "2"}},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:1"}]}}},
    }
    assert differs(DESIRED, changed)
    missing = {"metadata": {"name": "shop-api"}, "spec": DESIRED["spec"]}
    assert differs(DESIRED, missing)


def test_lists_compare_item_by_item_and_by_length() -> None:
    two = {"spec": {"ports": [{"port": 80}, {"port": 9090}]}}
    assert not differs(two, {"spec": {"ports": [{"port": 80, "x": 1}, {"port": 9090}]}})
    assert differs(two, {"spec": {"ports": [{"port": 80}]}})
    assert differs(two, {"spec": {"ports": [{"port": 9090}, {"port": 80}]}})


def test_type_changes_are_differences() -> None:
    assert differs({"a": {"b": 1}}, {"a": 1})
    assert differs({"a": [1]}, {"a": {"0": 1}})
    assert differs({"a": "1"}, {"a": 1})
