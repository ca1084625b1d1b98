"""The EEPROM's quick commit (no power cut armed) against the step-by-step one a tearing test walks."""

from hypothesis import given
from hypothesis import strategies as st

from cardos.nvm import Store

_OPS = st.lists(st.tuples(st.sampled_from(["put", "delete", "write", "commit", "rollback"]),
                          st.integers(0, 5), st.integers(0, 3)), max_size=30)


def _apply(store: Store, op: str, key: int, value: int, write_as_put_and_commit: bool = False) -> None:
    if op == "write" and write_as_put_and_commit:
        store.put(key, value)
        store.commit()
    elif op in ("put", "write"):
        getattr(store, op)(key, value)
    elif op == "delete":
        store.delete(key)
    else:
        getattr(store, op)()


def _state(store: Store) -> tuple:
    return (store.data, store.staged, store.steps, store.touched, store.commits, store.buffer, store.commit_flag)


@given(_OPS)
def test_a_commit_with_no_cut_armed_writes_and_counts_as_one_that_could_be_cut(ops):
    # The quick commit (nothing armed) must leave what the step-by-step one leaves, steps and
    # touched keys included: tearing tests number the steps, the serve saver reads the keys.
    quick, checked = Store({0: "a", 1: "b"}), Store({0: "a", 1: "b"})
    checked.arm_tear(10**9)
    for op, key, value in ops:
        _apply(quick, op, key, value)
        _apply(checked, op, key, value)
        assert _state(quick) == _state(checked)


@given(_OPS)
def test_write_is_put_then_commit(ops):
    # A PIN try writes its counter with write(): it must be exactly a put and a commit.
    written, reference = Store({0: "a", 1: "b"}), Store({0: "a", 1: "b"})
    for op, key, value in ops:
        _apply(written, op, key, value)
        _apply(reference, op, key, value, write_as_put_and_commit=True)
        assert _state(written) == _state(reference)
