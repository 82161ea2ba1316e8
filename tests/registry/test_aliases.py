"""Aliases with history, the approval rule, the state machine and the audit log."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from keel.errors import InvalidInputError, NotFoundError, StateError
from keel.metadata.schema import alias_history as history_table
from keel.metadata.schema import audit_log as audit_table
from keel.metadata.schema import model_aliases, model_versions
from keel.project import Project
from keel.registry import (
    alias_history,
    audit_log,
    delete_alias,
    get_model_version,
    register_model_version,
    set_alias,
    transition,
)

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
Y = np.array([0, 1, 0, 1])


@pytest.fixture(scope="module")
def clf() -> Any:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=0).fit(X, Y)


@pytest.fixture
def three(project: Project, clf: Any) -> Project:
    """The project with versions 1, 2 and 3 of model 'm'."""
    for _ in range(3):
        register_model_version(project, clf, "m")
    return project


def with_config(project: Project, **overrides: Any) -> Project:
    """The same stores, seen through different configuration."""
    return Project(
        project.root,
        overrides={"metadata.url": project.config.metadata.url, **overrides},
        environ={},
    )


def snapshot(project: Project) -> dict[str, Any]:
    with project.metadata.read() as conn:
        counts = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (model_aliases, history_table, audit_table)
        }
        states = conn.execute(
            select(model_versions.c.version, model_versions.c.state).order_by("version")
        ).all()
    return {**counts, "states": [tuple(s) for s in states]}


def test_alias_moves_are_recorded(three: Project) -> None:
    first = set_alias(three, "m", "champion", 1, reason="baseline", author="alice")
    assert (first.from_version, first.to_version, first.author) == (None, 1, "alice")
    set_alias(three, "m", "champion", 3, reason="better recall", author="bob")
    set_alias(three, "m", "staging", 2)
    removed = delete_alias(three, "m", "staging", reason="not needed")
    assert (removed.from_version, removed.to_version) == (2, None)

    moves = [
        (c.alias, c.from_version, c.to_version, c.author, c.reason)
        for c in alias_history(three, "m")
    ]
    assert moves == [
        ("champion", None, 1, "alice", "baseline"),
        ("champion", 1, 3, "bob", "better recall"),
        ("staging", None, 2, three.user, None),
        ("staging", 2, None, three.user, "not needed"),
    ]
    assert [c.to_version for c in alias_history(three, "m", "champion")] == [1, 3]
    assert get_model_version(three, "m@champion").version == 3
    assert get_model_version(three, "m@3").aliases == ["champion"]
    with pytest.raises(NotFoundError, match="no alias 'staging'"):
        get_model_version(three, "m@staging")


def test_setting_the_same_version_writes_nothing(three: Project) -> None:
    set_alias(three, "m", "champion", 2)
    before = snapshot(three)
    change = set_alias(three, "m", "champion", 2)
    assert (change.from_version, change.to_version) == (2, 2)
    assert snapshot(three) == before


def test_author_defaults_to_project_user(three: Project) -> None:
    alice = with_config(three, user="alice@example.com")
    try:
        set_alias(alice, "m", "champion", 1)
        transition(alice, "m", 1, "approved")
    finally:
        alice.close()
    assert alias_history(three, "m")[-1].author == "alice@example.com"
    assert audit_log(three, entity_ref="m@1", limit=1)[0].actor == "alice@example.com"


def test_approval_rule(three: Project) -> None:
    strict = with_config(three, **{"registry.require_approval": ["champion"]})
    try:
        before = snapshot(strict)
        with pytest.raises(StateError, match=r"version 2 .* is candidate.*keel models approve m 2"):
            set_alias(strict, "m", "champion", 2)
        assert snapshot(strict) == before
        set_alias(strict, "m", "staging", 2)  # not a guarded alias
        transition(strict, "m", 2, "approved", reason="reviewed")
        assert set_alias(strict, "m", "champion", 2).to_version == 2
    finally:
        strict.close()


def test_state_machine(three: Project) -> None:
    assert transition(three, "m", 1, "approved").state == "approved"
    assert transition(three, "m", 1, "archived").state == "archived"
    assert transition(three, "m", 2, "archived").state == "archived"  # candidate -> archived
    assert get_model_version(three, "m@1").state == "archived"
    with pytest.raises(StateError, match="archived, which is final"):
        transition(three, "m", 1, "approved")
    transition(three, "m", 3, "approved")
    before = snapshot(three)
    with pytest.raises(StateError, match=r"from approved to candidate.*may move to: archived"):
        transition(three, "m", 3, "candidate")
    with pytest.raises(StateError, match="approved to approved"):
        transition(three, "m", 3, "approved")
    with pytest.raises(InvalidInputError, match="state 'live' is invalid"):
        transition(three, "m", 3, "live")
    assert snapshot(three) == before


def test_aliases_and_archiving_exclude_each_other(three: Project) -> None:
    set_alias(three, "m", "champion", 1)
    before = snapshot(three)
    with pytest.raises(StateError, match=r"alias 'champion'.*keel models alias m champion"):
        transition(three, "m", 1, "archived")
    assert snapshot(three) == before
    transition(three, "m", 2, "archived")
    before = snapshot(three)
    with pytest.raises(StateError, match="version 2 of model 'm' is archived"):
        set_alias(three, "m", "champion", 2)
    assert snapshot(three) == before
    set_alias(three, "m", "champion", 3)
    assert transition(three, "m", 1, "archived").state == "archived"


def test_every_change_is_audited(three: Project) -> None:
    set_alias(three, "m", "champion", 1, reason="first", author="alice")
    transition(three, "m", 2, "approved", reason="ok", author="bob")
    set_alias(three, "m", "champion", 2, author="bob")
    delete_alias(three, "m", "champion", author="carol")
    records = list(reversed(audit_log(three)))
    summary = [(r.action, r.entity_kind, r.entity_ref, r.actor) for r in records]
    user = three.user
    assert summary == [
        ("register", "model_version", "m@1", user),
        ("register", "model_version", "m@2", user),
        ("register", "model_version", "m@3", user),
        ("set_alias", "model_alias", "m@champion", "alice"),
        ("transition", "model_version", "m@2", "bob"),
        ("set_alias", "model_alias", "m@champion", "bob"),
        ("delete_alias", "model_alias", "m@champion", "carol"),
    ]
    assert records[3].details == {"from_version": None, "to_version": 1, "reason": "first"}
    assert records[4].details == {"from": "candidate", "to": "approved", "reason": "ok"}
    assert [r.entity_ref for r in audit_log(three, entity_ref_prefix="m@", limit=2)] == [
        "m@champion",
        "m@champion",
    ]
    assert len(audit_log(three, entity_kind="model_version", action="register")) == 3


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p: set_alias(p, "m", "Champion", 1), InvalidInputError, "lowercase"),
        (lambda p: set_alias(p, "m", "42", 1), InvalidInputError, "not a pure number"),
        (lambda p: set_alias(p, "m", "latest", 1), InvalidInputError, "not 'latest'"),
        (lambda p: set_alias(p, "m", "champion", 9), NotFoundError, "no version 9.*1-3"),
        (lambda p: set_alias(p, "m", "champion", 0), InvalidInputError, "from 1"),
        (lambda p: set_alias(p, "nope", "champion", 1), NotFoundError, "'nope' is not registered"),
        (lambda p: delete_alias(p, "m", "champion"), NotFoundError, "no alias 'champion'"),
        (lambda p: transition(p, "m", 9, "approved"), NotFoundError, "no version 9"),
        (lambda p: transition(p, "m x", 1, "approved"), InvalidInputError, "letters, digits"),
        (lambda p: alias_history(p, "nope"), NotFoundError, "not registered"),
    ],
)
def test_bad_input_writes_nothing(three: Project, call: Any, error: Any, message: str) -> None:
    before = snapshot(three)
    with pytest.raises(error, match=message):
        call(three)
    assert snapshot(three) == before
