"""Valid card images mutated field by field (issue 15, "done means"): each either loads, and the card
then keeps every invariant and never answers 6F00, or fails to load with one line and exit 2.
Never a traceback. Mutations are tried both as damage (old digest) and as accepted hand edits."""

import copy
import json
from functools import lru_cache

from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cardos import image
from cardos.apdu import build, split_response
from cardos.files import DedicatedFile, KeyFile, TransparentEF, VariableRecordEF
from cardos.image import ImageError
from cardos.invariants import check_state
from cli import main
from personalize import fmcos
from personalize.demo import demo_card
from tests import ss
from tests.util import is_spec_sw

RAW = {"@@1e400@@": "1e400", "@@nan@@": "NaN", "@@digits@@": "9" * 5000, "@@half@@": "0.5", "@@neg0@@": "-0"}


@lru_cache(maxsize=None)
def template(kind: str) -> dict:
    card = demo_card() if kind == "demo" else ss.card()
    return image.sealed(image.to_document(card))


@lru_cache(maxsize=None)
def places(kind: str) -> tuple:
    out = []

    def walk(node, at):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            out.append(at + (k,))
            walk(v, at + (k,))
    walk(template(kind), ())
    return tuple(p for p in out if p != ("digest",))


def _near(value):
    """Values a careless or hostile edit would put in place of value."""
    common = st.sampled_from([None, True, False, 0, -1, 1, 15, 16, 255, 256, 1024, 65535, 65536, "", "00", "FF",
                              "ZZ", [], {}, *RAW])
    if isinstance(value, bool):
        return common | st.sampled_from([not value, str(value).lower(), int(value)])
    if isinstance(value, int):
        return common | st.integers(-3, 3).map(lambda d: value + d) | st.sampled_from([value * 2, -value, str(value)])
    if isinstance(value, str):
        variants = [value[:-2], value + "00", value + "FF", value.lower(), value[2:], value * 2]
        return (common | st.sampled_from(variants) | st.integers(0, max(len(value) - 1, 0)).flatmap(
            lambda i: st.sampled_from("0123456789ABCDEFG/ ").map(lambda ch: value[:i] + ch + value[i + 1:])))
    if isinstance(value, list):
        return common | st.sampled_from([value[:-1], value + value[-1:], value[::-1]])
    return common


@st.composite
def mutated(draw):
    kind = draw(st.sampled_from(["demo", "ss"]))
    doc = copy.deepcopy(template(kind))
    for _ in range(draw(st.integers(1, 2))):
        at = draw(st.sampled_from(places(kind)))
        parent = doc
        try:
            for k in at[:-1]:
                parent = parent[k]
            current = parent[at[-1]]
        except (KeyError, IndexError, TypeError):
            continue
        op = draw(st.sampled_from(["replace", "replace", "replace", "drop", "extra", "copy"]))
        if op == "drop":
            del parent[at[-1]]
        elif op == "extra" and isinstance(current, dict):
            current[draw(st.sampled_from(["x", "tries_left", "binary", "records", "card_blocked"]))] = 1
        elif op == "copy" and isinstance(parent, list):
            parent.insert(at[-1], copy.deepcopy(current))
        else:
            parent[at[-1]] = draw(_near(current))
    return kind, doc


def _text(doc: dict) -> str:
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    for mark, raw in RAW.items():
        text = text.replace(json.dumps(mark), raw)
    return text


def _same(doc: dict, kind: str) -> bool:
    """The same document once parsed: "-0" for a 0 is a different text, not a different image."""
    def canonical(text: str) -> str:
        numbers = {"parse_int": lambda t: int(t) if len(t) < 20 else t, "parse_float": str, "parse_constant": str}
        return json.dumps(json.loads(text, **numbers), sort_keys=True)
    return canonical(_text(doc)) == canonical(_text(template(kind)))


def _exercise(card) -> None:
    """Every DF and EF through the commands a terminal sends: no 6F00, no answer over 256 bytes."""
    card.power_on()
    tree = list(card.fs.walk())
    for path, spec in tree:
        if not isinstance(spec, DedicatedFile):
            continue
        for apdu in fmcos.select_path(path):
            _send(card, apdu)
        _send(card, build(0x00, 0xA4, 0x00, 0x00, path[-1].to_bytes(2, "big"), 256))
        for kid_path, kid in tree:
            if kid_path[:-1] != path or isinstance(kid, (DedicatedFile, KeyFile)):
                continue
            _send(card, fmcos.select_fid(kid.fid))
            sfi = kid.sfi << 3
            for apdu in ("00B0000000", "00B2010400", f"00B201{sfi | 4:02X}00", "00B2010500", "00B0000001",
                         f"00E200{sfi:02X}0301015A", f"00DC01{sfi | 4:02X}0301015A", "00D60000015A"):
                _send(card, bytes.fromhex(apdu))
        for apdu in ("0020000003123456", "0020000003999999", "00200000", "805E010007123456FF123456",
                     "0084000008", "00880000080102030405060708", "80A8000002830000", "80CA9F1700",
                     "00C0000000"):
            _send(card, bytes.fromhex(apdu))
        _send(card, fmcos.create_file(TransparentEF(0x0EEE, size=4)))
        _send(card, fmcos.create_file(VariableRecordEF(0x0EED, size=8)))
        _send(card, fmcos.create_file(DedicatedFile(0x0EEC, size=0x20, name=b"MUT.DF")))
        check_state(card.store.data, card.config)


def _send(card, apdu: bytes) -> None:
    resp = card.transmit(apdu)
    data, status = split_response(resp)
    assert status != 0x6F00, f"{apdu.hex()} -> 6F00"
    assert is_spec_sw(status) and len(data) <= 256, f"{apdu.hex()} -> {len(data)} bytes {status:04X}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(case=mutated())
def test_mutated_images_load_whole_or_fail_in_one_line(tmp_path, case):
    kind, doc = case
    path = tmp_path / "m.json"
    # As damage: the digest still says what the image held before.
    path.write_text(_text(doc), encoding="utf-8")
    if not _same(doc, kind):
        try:
            image.load(path)
            raise AssertionError("a changed image loaded under its old digest")
        except ImageError:
            pass
    # As an accepted hand edit: resealed, so the checks of the contents decide.
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(template(kind)["digest"], image.digest(image.read_document(path)), 1),
                    encoding="utf-8")
    before = path.read_bytes()
    r = CliRunner().invoke(main, ["image", "info", str(path)], catch_exceptions=False)
    assert path.read_bytes() == before
    if r.exit_code != 0:
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        event("refused")
        return
    event("loaded")
    card = image.load(path)
    _exercise(card)
    image.save(card, path)
    image.load(path)
